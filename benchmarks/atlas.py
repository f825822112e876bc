"""Many structures on real anatomy: the AAL brain atlas (116 regions), the text model against plain nnU-Net
trained on the same labels, the late-fusion ablation, the light and the shared decoder, and plain nnU-Net with
the text models' optimiser (AdamW, an ablation). Writes docs/results/atlas.md.

Every step is the real command: ``nnUNetv2_text_convert_atlas`` -> ``nnUNetv2_plan_and_preprocess -pl
nnUNetPlannerResEncM`` -> ``nnUNetv2_text_embed`` -> ``nnUNetv2_train`` (fold 0, one model at a time) ->
``nnUNetv2_text_predict`` / ``nnUNetv2_predict`` on the held-out subjects (imagesTs). All models share
the plans, the data and the number of steps; plain nnU-Net, like the text models, never mirrors left-right.

Resumable: the data is prepared once per workdir (``preparation.json``; other options are refused, so the
tables always come from one preparation), and each model's training and predictions are kept as they finish
(``model_<name>.json``), so the models may be trained across several sittings (``--models``).

Reported on the held-out subjects: per-region Dice and its mean by region-size tercile; left/right confusion
over every lateral pair; each group's Dice (text: the group prompt; plain: the union of its labels);
false-positive islands per (case, region); the wall time to predict every region of a whole case (text: all
region prompts; plain: one multi-class pass), both measured in this process; and, for the text models, the
held-out wordings and unlabelled structures of ``benchmarks/atlas_prompts.json`` (written before any training,
never used to choose anything).

    python benchmarks/atlas.py --preset cpu --workdir /tmp/atlas_cpu --device cpu
    python benchmarks/atlas.py --preset gpu --workdir /data/atlas_gpu --device cuda
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import SimpleITK as sitk
import torch

from nnunetv2_text.demo.pipeline import command, run
from nnunetv2_text.evaluation.metrics import dice, false_positive_islands
from nnunetv2_text.inference.export import UNKNOWN_FLAGS
from nnunetv2_text.text.vocabulary import Vocabulary, load_vocabulary, resolve_vocabulary_path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import benchmark_env, device_name, git_commit, plan_resenc_m, write_section  # noqa: E402

HERE = Path(__file__).resolve().parent
DATASET_ID = 997
PROMPTS = json.loads((HERE / "atlas_prompts.json").read_text(encoding="utf-8"))
MODELS = {"text": "text model, every stage per prompt", "plain": "plain nnU-Net, same labels",
          "late": "late fusion (ablation)", "light": "light decoder", "shared": "shared decoder",
          "plainAdamW": "plain nnU-Net, AdamW (ablation)",
          "sharedMany": "shared decoder, 32 prompts per sample (ablation)",
          "sharedAll": "shared decoder, every concept per sample (the default's count)"}
#: whole-case timings per model, of which the median is reported
TIMING_REPEATS = 5
#: models that answer every label in one multi-class pass (no prompts)
PLAIN_MODELS = ("plain", "plainAdamW")
PRESETS = {
    # each model trains in at most 45 min on 2 CPU cores: 6 mm (drops the 14 regions under 10 voxels), the
    # ResEncM plans narrowed to 16-128 features (same stages and patch), batch 2, 2400 steps, 4 present prompts
    "cpu": {"spacing": 6.0, "subjects": 20, "test": 5, "small": True,
            "trainers": {"text": "TextFusionTrainer_atlasCPU", "plain": "nnUNetTrainer_noLRMirror_atlasCPU",
                         "late": "TextFusionTrainer_atlasCPU_lateFusion", "light": "TextFusionTrainer_atlasCPU_light",
                         "shared": "TextFusionTrainer_atlasCPU_shared",
                         "plainAdamW": "nnUNetTrainer_noLRMirror_atlasCPU_AdamW",
                         "sharedMany": "TextFusionTrainer_atlasCPU_sharedMany",
                         "sharedAll": "TextFusionTrainer_atlasCPU_sharedAll"}},
    # checks the whole pipeline in a few minutes; its figures mean nothing
    "smoke": {"spacing": 8.0, "subjects": 5, "test": 1, "small": True,
              "trainers": {"text": "TextFusionTrainer_atlasSmoke", "plain": "nnUNetTrainer_noLRMirror_atlasSmoke",
                           "late": "TextFusionTrainer_atlasSmoke_lateFusion",
                           "light": "TextFusionTrainer_atlasSmoke_light",
                           "shared": "TextFusionTrainer_atlasSmoke_shared",
                           "plainAdamW": "nnUNetTrainer_noLRMirror_atlasSmoke_AdamW",
                           "sharedMany": "TextFusionTrainer_atlasSmoke_sharedMany",
                           "sharedAll": "TextFusionTrainer_atlasSmoke_sharedAll"}},
    # the full schedule (1000 x 250 steps) on the ResEncM plans at 2 mm: figures owed until a GPU is lent
    "gpu": {"spacing": 2.0, "subjects": 40, "test": 10, "small": False,
            "trainers": {"text": "TextFusionTrainer_everyStage", "plain": "nnUNetTrainer_noLRMirror",
                         "late": "TextFusionTrainer_lateFusion", "light": "TextFusionTrainer_light",
                         "shared": "TextFusionTrainer", "plainAdamW": "nnUNetTrainer_noLRMirror_AdamW"}},
}


def prepare(preset: str, work: Path, env: dict, log: Path) -> tuple:
    """Convert, plan and embed once per workdir -> (raw folder, plans name)."""
    p = PRESETS[preset]
    wanted = {"preset": preset, "atlas": "aal", "spacing": p["spacing"], "subjects": p["subjects"],
              "test": p["test"], "seed": 0}
    record = work / "preparation.json"
    if record.is_file():
        saved = json.loads(record.read_text())
        if saved["options"] != wanted:
            raise SystemExit(f"{work} was prepared with {saved['options']}, not {wanted}: use another --workdir")
        return Path(saved["raw"]), saved["plans"]
    did = str(DATASET_ID)
    run([command("nnUNetv2_text_convert_atlas"), "-d", did, "-n", str(p["subjects"]), "--test", str(p["test"]),
         "--spacing", str(p["spacing"]), "--seed", "0", "--overwrite"], env, log)
    raw = next(Path(env["nnUNet_raw"]).glob(f"Dataset{did}_*"))
    plans = plan_resenc_m(DATASET_ID, raw, env, log, small=p["small"])
    run([command("nnUNetv2_text_embed"), "-d", did], env, log)
    record.write_text(json.dumps({"options": wanted, "raw": str(raw), "plans": plans,
                                  "date": datetime.date.today().isoformat()}, indent=1))
    return raw, plans


def atlas_vocabulary(raw: Path) -> Vocabulary:
    dj = json.loads((raw / "dataset.json").read_text())
    return load_vocabulary(resolve_vocabulary_path("aal"), dj["labels"], dj.get("dropped_regions", ()))


def prompt_list(vocab: Vocabulary) -> List[str]:
    """Every concept's main term (regions and groups), the held-out wordings and unlabelled structures."""
    words = [w for ws in PROMPTS["paraphrases"].values() for w in ws]
    return list(dict.fromkeys([c.main for c in vocab.concepts] + words + PROMPTS["unlabelled"]))


def model_folder(env: dict, raw: Path, trainer: str, plans: str) -> Path:
    return Path(env["nnUNet_results"]) / raw.name / f"{trainer}__{plans}__3d_fullres"


def train_and_predict(name: str, trainer: str, ctx: dict) -> dict:
    """Train fold 0 and predict the held-out subjects, unless an earlier sitting did (``model_<name>.json``)."""
    record = ctx["work"] / f"model_{name}.json"
    if record.is_file():
        return json.loads(record.read_text())
    env, log, raw, plans = ctx["env"], ctx["log"], ctx["raw"], ctx["plans"]
    did = str(DATASET_ID)
    t = time.time()
    run([command("nnUNetv2_train"), did, "3d_fullres", "0", "-tr", trainer, "-p", plans, "-device", ctx["device"]],
        env, log)
    seconds = time.time() - t
    pred = ctx["work"] / f"pred_{name}"
    common = ["-i", str(raw / "imagesTs"), "-o", str(pred), "-d", did, "-c", "3d_fullres", "-f", "0", "-tr",
              trainer, "-p", plans, "-device", ctx["device"], "-npp", "1", "-nps", "1", "--disable_tta"]
    if name in PLAIN_MODELS:
        run([command("nnUNetv2_predict"), *common], env, log)
    else:
        run([command("nnUNetv2_text_predict"), *common, "--prompts", str(ctx["prompt_file"])], env, log)
    out = {"trainer": trainer, "training_seconds": seconds, "predictions": str(pred),
           "date": datetime.date.today().isoformat(), "commit": git_commit()}
    record.write_text(json.dumps(out, indent=1))
    return out


def read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def regions(vocab: Vocabulary, labels: Dict[str, int]) -> Dict[str, tuple]:
    """AAL name -> (label value, main term of its single-label concept)."""
    by_value = {c.labels[0]: c.main for c in vocab.concepts if len(c.labels) == 1}
    return {n: (v, by_value[v]) for n, v in labels.items() if v > 0}


def predicted_masks(name: str, pred: Path, case: str, manifest: Optional[dict], mains: List[str]) -> dict:
    """{main term: bool mask} of one case: the prompt's file (text models) or the label of the multi-class
    map (plain nnU-Net, through the main term's concept labels)."""
    if name not in PLAIN_MODELS:
        recs = manifest["cases"][case]
        return {m: read(pred / recs[m]["file"]) > 0 for m in mains}
    return {"__seg__": read(pred / f"{case}.nii.gz")}


def measure_case(name: str, ref: np.ndarray, masks: dict, vocab: Vocabulary, table: Dict[str, tuple]) -> dict:
    """Per-region Dice and islands, left/right confusions, group Dice of one case."""
    seg = masks.get("__seg__")

    def mask_of(concept) -> np.ndarray:
        return np.isin(seg, concept.labels) if seg is not None else masks[concept.main]

    out = {"dice": {}, "islands": {}, "confused": [], "groups": {}}
    for n, (v, main) in table.items():
        gt = ref == v
        if not gt.any():
            continue
        pm = mask_of(vocab.lookup(main))
        out["dice"][n], out["islands"][n] = dice(pm, gt), false_positive_islands(pm, gt)
        twin = n[:-1] + {"L": "R", "R": "L"}[n[-1]] if n[-2:] in ("_L", "_R") else None
        if twin in table and np.count_nonzero(pm & (ref == table[twin][0])) > np.count_nonzero(pm & gt):
            out["confused"].append(n)
    for c in vocab.concepts:
        if len(c.labels) > 1 and np.isin(ref, c.labels).any():
            out["groups"][c.id] = dice(mask_of(c), np.isin(ref, c.labels))
    return out


def measure_language(manifest: dict, vocab: Vocabulary) -> dict:
    """Held-out wordings (per wording: understood as its own concept / flagged / another structure,
    unflagged) and unlabelled structures (per (case, prompt): empty or flagged)."""
    first = next(iter(manifest["cases"].values()))
    own = flagged = wrong = 0
    wrong_examples = []
    for cid, words in PROMPTS["paraphrases"].items():
        for w in words:
            rec = first[w]
            if rec["flag"] in UNKNOWN_FLAGS:
                flagged += 1
            elif rec["understood"]["concept"] == cid:
                own += 1
            else:
                wrong += 1
                wrong_examples.append(f"'{w}' -> {rec['understood']['concept']}")
    n_words = sum(len(ws) for ws in PROMPTS["paraphrases"].values())
    un = [(recs[p]["voxels"] == 0 or recs[p]["flag"] in UNKNOWN_FLAGS)
          for recs in manifest["cases"].values() for p in PROMPTS["unlabelled"]]
    return {"wordings": n_words, "own": own, "flagged": flagged, "wrong": wrong, "wrong_examples": wrong_examples,
            "unlabelled_pairs": len(un), "unlabelled_empty_or_flagged": int(sum(un)),
            "unlabelled_network_empty": int(sum(recs[p]["voxels"] == 0 for recs in manifest["cases"].values()
                                                for p in PROMPTS["unlabelled"]))}


def measure(name: str, pred: Path, raw: Path, vocab: Vocabulary) -> dict:
    labels = json.loads((raw / "dataset.json").read_text())["labels"]
    table = regions(vocab, labels)
    manifest = json.loads((pred / "manifest.json").read_text()) if name not in PLAIN_MODELS else None
    mains = [c.main for c in vocab.concepts]
    cases = sorted(p.name[: -len(".nii.gz")] for p in (raw / "labelsTs").glob("*.nii.gz"))
    per_case = {}
    for case in cases:
        ref = read(raw / "labelsTs" / f"{case}.nii.gz")
        per_case[case] = measure_case(name, ref, predicted_masks(name, pred, case, manifest, mains), vocab, table)
        per_case[case]["sizes"] = {n: int((ref == v).sum()) for n, (v, _) in table.items()}
    out = {"cases": per_case}
    if manifest is not None:
        out["language"] = measure_language(manifest, vocab)
    return out


def time_whole_case(names: List[str], ctx: dict, vocab: Vocabulary) -> Dict[str, float]:
    """Seconds to predict every region of the first held-out case, each model in this process, no TTA: the
    text models with all region prompts in one call, plain nnU-Net with one multi-class pass; the median of
    ``TIMING_REPEATS`` runs (one run moved two copies of plain nnU-Net's network 27 % apart)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2_text.inference.api import TextSegmenter

    image = sorted((ctx["raw"] / "imagesTs").glob("*_0000.nii.gz"))[0]
    mains = [c.main for c in vocab.concepts if len(c.labels) == 1]
    device = torch.device(ctx["device"])
    out = {}
    for name in names:
        folder = model_folder(ctx["env"], ctx["raw"], PRESETS[ctx["preset"]]["trainers"][name], ctx["plans"])
        if name in PLAIN_MODELS:
            p = nnUNetPredictor(use_mirroring=False, device=device, perform_everything_on_device=device.type == "cuda",
                                allow_tqdm=False)
            p.initialize_from_trained_model_folder(str(folder), (0,), "checkpoint_final.pth")

            def once():
                data, props = p.plans_manager.image_reader_writer_class().read_images([str(image)])
                p.predict_single_npy_array(data, props, None, None, False)
        else:
            seg = TextSegmenter(folder, folds=(0,), device=ctx["device"], use_mirroring=False)

            def once():
                seg.predict(str(image), mains)
        once()  # warm-up (and compilation, where enabled)
        runs = []
        for _ in range(TIMING_REPEATS):
            t = time.perf_counter()
            once()
            runs.append(time.perf_counter() - t)
        out[name] = float(np.median(runs))
    return out


def _mean(values) -> float:
    values = list(values)
    return float(np.mean(values)) if values else float("nan")


def summary(m: dict) -> dict:
    """Averages of one model's per-case measures: region Dice (all, and per size tercile), confusions,
    group Dice, islands."""
    cases = m["cases"].values()
    names = sorted({n for c in cases for n in c["dice"]})
    size = {n: _mean(c["sizes"][n] for c in cases) for n in names}
    per_region = {n: _mean(c["dice"][n] for c in cases if n in c["dice"]) for n in names}
    order = sorted(names, key=lambda n: size[n])
    terciles = [order[i * len(order) // 3:(i + 1) * len(order) // 3] for i in range(3)]
    lateral = [n for c in cases for n in c["dice"] if n[-2:] in ("_L", "_R")]
    islands = [v for c in cases for v in c["islands"].values()]
    groups = sorted({g for c in cases for g in c["groups"]})
    return {"regions": per_region, "mean": _mean(per_region.values()),
            "terciles": [_mean(per_region[n] for n in t) for t in terciles],
            "tercile_bounds": [(size[t[0]], size[t[-1]]) for t in terciles],
            "confused": sum(len(c["confused"]) for c in cases), "lateral": len(lateral),
            "groups": {g: _mean(c["groups"][g] for c in cases if g in c["groups"]) for g in groups},
            "islands_mean": _mean(islands), "islands_any": _mean(v > 0 for v in islands), "islands_total": int(sum(islands))}


def report(results: Dict[str, dict], timings: Dict[str, float], ctx: dict, vocab: Vocabulary) -> str:
    s = {k: summary(v) for k, v in results.items()}
    cols = list(results)
    lines = [f"<!-- atlas-{ctx['preset']} -->",
             f"## AAL, {ctx['preset'].upper()} preset ({datetime.date.today().isoformat()}, "
             f"{device_name(torch.device(ctx['device']))}, commit {git_commit()})", "",
             f"Command: `python benchmarks/atlas.py --preset {ctx['preset']} --workdir {ctx['work']} --device "
             f"{ctx['device']} --models {' '.join(cols)}`. Data: {ctx['prep']}. Plans `{ctx['plans']}`, fold 0, "
             f"no test-time mirroring. Trainers: " + ", ".join(
                 f"{MODELS[k]} `{results[k]['trainer']}` ({results[k]['training_seconds'] / 60:.1f} min, "
                 f"{results[k]['date']}, {results[k]['commit']})" for k in cols) + ".", "",
             "| measure | " + " | ".join(MODELS[k] for k in cols) + " |", "| --- |" + " --- |" * len(cols)]

    def row(label, fn):
        lines.append(f"| {label} | " + " | ".join(fn(k) for k in cols) + " |")

    def gap(k, value):
        return "" if k == "plain" or "plain" not in s else f" ({value(s[k]) - value(s['plain']):+.3f})"

    row("mean region Dice (gap to plain)", lambda k: f"{s[k]['mean']:.3f}{gap(k, lambda x: x['mean'])}")
    for i, name in enumerate(("small", "middle", "large")):
        lo, hi = next(iter(s.values()))["tercile_bounds"][i]
        row(f"mean Dice, {name} third ({lo:.0f}-{hi:.0f} voxels)",
            lambda k, i=i: f"{s[k]['terciles'][i]:.3f}{gap(k, lambda x: x['terciles'][i])}")
    row("left/right confusions (region masks mostly on the twin)", lambda k: f"{s[k]['confused']} / {s[k]['lateral']}")
    row("mean group Dice (gap to plain)",
        lambda k: f"{_mean(s[k]['groups'].values()):.3f}{gap(k, lambda x: _mean(x['groups'].values()))}")
    row("false-positive islands per (case, region): mean / share with any / total",
        lambda k: f"{s[k]['islands_mean']:.2f} / {100 * s[k]['islands_any']:.0f} % / {s[k]['islands_total']}")
    if timings:
        row(f"whole case, every region: seconds, median of {TIMING_REPEATS} (ratio to plain)", lambda k: f"{timings[k]:.2f}" + (
            f" ({timings[k] / timings['plain']:.2f}x)" if "plain" in timings and k in timings else "")
            if k in timings else "not timed")
    lang = {k: v["language"] for k, v in results.items() if "language" in v}
    if lang:
        row("held-out wordings understood as their own concept",
            lambda k: f"{lang[k]['own']} / {lang[k]['wordings']}" if k in lang else "-")
        row("held-out wordings flagged unknown", lambda k: f"{lang[k]['flagged']}" if k in lang else "-")
        row("held-out wordings answered, unflagged, as another structure",
            lambda k: f"{lang[k]['wrong']}" if k in lang else "-")
        row("unlabelled structures empty or flagged, per (case, prompt) (network alone empty)",
            lambda k: f"{100 * lang[k]['unlabelled_empty_or_flagged'] / lang[k]['unlabelled_pairs']:.1f} % "
                      f"({100 * lang[k]['unlabelled_network_empty'] / lang[k]['unlabelled_pairs']:.1f} %)"
            if k in lang else "-")
        seen = {}  # the text encoder decides the understanding: models usually share the list
        for k, v in lang.items():
            if v["wrong_examples"]:
                seen.setdefault(tuple(v["wrong_examples"]), []).append(MODELS[k])
        for examples, names in seen.items():
            lines.append(f"\nWordings taken for another structure ({', '.join(names)}): {'; '.join(examples)}.")
    lines += ["", "Group Dice (text models: the group's prompt; plain nnU-Net: the union of its labels):", "",
              "| group | " + " | ".join(MODELS[k] for k in cols) + " |", "| --- |" + " --- |" * len(cols)]
    for g in next(iter(s.values()))["groups"]:
        lines.append(f"| {vocab.concept(g).main} | " + " | ".join(f"{s[k]['groups'].get(g, float('nan')):.3f}"
                                                               for k in cols) + " |")
    lines += ["", "<details><summary>Dice per region</summary>", "", "| region | " + " | ".join(
        MODELS[k] for k in cols) + " |", "| --- |" + " --- |" * len(cols)]
    for n in next(iter(s.values()))["regions"]:
        lines.append(f"| {n} | " + " | ".join(f"{s[k]['regions'].get(n, float('nan')):.3f}" for k in cols) + " |")
    lines += ["", "</details>", "", f"<!-- /atlas-{ctx['preset']} -->"]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=tuple(PRESETS), default="cpu")
    p.add_argument("--workdir", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--models", nargs="+", choices=tuple(MODELS), default=None,
                   help="models to train now (trained ones are reused; default: every model of the preset); the "
                        "report covers every trained one")
    p.add_argument("--no_timing", action="store_true", help="skip the whole-case timing")
    p.add_argument("--out", default=str(HERE.parent / "docs" / "results" / "atlas.md"))
    args = p.parse_args(argv)
    trainers = PRESETS[args.preset]["trainers"]
    missing = [m for m in args.models or () if m not in trainers]
    if missing:
        p.error(f"preset {args.preset} has no trainer for {', '.join(missing)}")
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env, log = benchmark_env(work), work / "atlas.log"
    raw, plans = prepare(args.preset, work, env, log)
    vocab = atlas_vocabulary(raw)
    prompt_file = work / "prompts.txt"
    prompt_file.write_text("\n".join(prompt_list(vocab)) + "\n", encoding="utf-8")
    prep = json.loads((work / "preparation.json").read_text())
    ctx = {"work": work, "env": env, "log": log, "raw": raw, "plans": plans, "device": args.device,
           "preset": args.preset, "prompt_file": prompt_file,
           "prep": ", ".join(f"{k} {v}" for k, v in prep["options"].items()) + f", prepared {prep['date']}"}
    for name in args.models or list(trainers):
        train_and_predict(name, trainers[name], ctx)
    done = [k for k in MODELS if (work / f"model_{k}.json").is_file()]
    results = {k: {**json.loads((work / f"model_{k}.json").read_text()),
                   **measure(k, work / f"pred_{k}", raw, vocab)} for k in done}
    os.environ.update({k: v for k, v in env.items() if k.startswith("nnUNet")})
    timings = {} if args.no_timing else time_whole_case(done, ctx, vocab)
    text = report(results, timings, ctx, vocab)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.is_file():
        out.write_text("# Brain-atlas benchmark (generated by benchmarks/atlas.py)\n", encoding="utf-8")
    write_section(out, f"atlas-{args.preset}", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
