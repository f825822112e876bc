"""Language robustness: foreign prompts, paraphrases, and the main terms, with and without foreign-prompt
training, on the toy or the MNI152 dataset. Writes a section of docs/results/robustness.md.

Every step is the real command (dataset -> nnUNetv2_plan_and_preprocess -> nnUNetv2_text_embed ->
nnUNetv2_train, once per trainer -> nnUNetv2_text_predict). The prompts come from
``benchmarks/robustness_prompts.json``: foreign prompts and paraphrases that no vocabulary and no training
pool contains. Measures, per trainer:

1. foreign prompts: share of (case, prompt) whose mask is empty (at most 1 % of the smallest labelled
   structure of the case), flagged unknown (below the similarity threshold or the margin), or either;
2. paraphrases: Dice of every vocabulary synonym and every held-out paraphrase on the cases where the
   concept is present (every concept, multi-label ones included): mean, std, worst, mean - worst per
   concept (SEER's measures); held-out paraphrases flagged as unknown; the same again with
   ``--wording nearest_term`` (each known wording given to the network as its nearest training term);
3. the main terms' Dice;
4. how similarity and presence separate: the highest similarity of a foreign prompt against the lowest of
   a paraphrase, and the presence score of present structures against foreign prompts (ROC AUC).

    python benchmarks/robustness.py --dataset toy --workdir /tmp/rob_toy --device cpu
    python benchmarks/robustness.py --dataset mni152 --workdir /tmp/rob_mni --device cpu --spacing 6
"""
from __future__ import annotations

import datetime
import json
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import SimpleITK as sitk
import torch

from nnunetv2_text.demo.pipeline import DEMO_PLANS, command, derive_plans, run
from nnunetv2_text.demo.toy import TRAIN_CASES, write_toy_dataset
from nnunetv2_text.evaluation.metrics import dice
from nnunetv2_text.inference.export import UNKNOWN_FLAGS  # not "not_found": a known prompt's empty answer
from nnunetv2_text.inference.prompt_file import DEFAULT_MIN_MARGIN, DEFAULT_MIN_SIMILARITY
from nnunetv2_text.text.vocabulary import load_vocabulary, resolve_vocabulary_path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import benchmark_env, device_name, plan_resenc_m, toy_or_mni_parser, write_section  # noqa: E402

HERE = Path(__file__).resolve().parent
MARGIN_SWEEP = (-0.1, 0.0, 0.02, 0.04, 0.06, 0.08, 0.1)
PROMPTS = json.loads((HERE / "robustness_prompts.json").read_text(encoding="utf-8"))
TRAINERS = {"with foreign prompts": "TextFusionTrainer_demo", "without (ablation)": "TextFusionTrainer_demoNoForeign",
            "with foreign prompts and the empty-target loss": "TextFusionTrainer_demoEmptyLoss",
            "foreign prompts by the earlier rule": "TextFusionTrainer_demoForeignReplaces",
            "foreign prompts in 20 % of samples (today's default), 1600 steps": "TextFusionTrainer_demo32epochs",
            "without, 1600 steps": "TextFusionTrainer_demoNoForeign32epochs",
            "foreign prompts in 50 % of samples (the earlier default), 1600 steps":
                "TextFusionTrainer_demoForeign050_32epochs"}


def prepare(dataset: str, work: Path, env: dict, log: Path, test_cases: int, spacing: float) -> tuple:
    """Raw dataset, planned and embedded -> (raw folder, dataset id, plans name, vocabulary name)."""
    if dataset == "toy":
        did = 995
        raw = write_toy_dataset(Path(env["nnUNet_raw"]), did, num_cases=TRAIN_CASES, num_test=test_cases, seed=3)
        run([command("nnUNetv2_plan_and_preprocess"), "-d", str(did), "-pl", "nnUNetPlannerResEncM", "-c",
             "3d_fullres", "-np", "2"], env, log)
        derive_plans(Path(env["nnUNet_preprocessed"]) / raw.name, "nnUNetResEncUNetMPlans", DEMO_PLANS,
                     features=(8, 16, 32, 64), blocks=(1, 1, 2, 2), batch_size=4)
        plans, vocab = DEMO_PLANS, "toy_shapes"
    else:
        did = 996
        run([command("nnUNetv2_text_convert_mni152"), "-d", str(did), "-n", "20", "--test", str(test_cases),
             "--spacing", str(spacing), "--overwrite"], env, log)
        raw = next(Path(env["nnUNet_raw"]).glob(f"Dataset{did}_*"))
        plans, vocab = plan_resenc_m(did, raw, env, log, small=True), "mni152"
    run([command("nnUNetv2_text_embed"), "-d", str(did)], env, log)
    return raw, did, plans, vocab


def prepare_run(args, log_name: str) -> tuple:
    """The workdir, nnU-Net environment and log of a toy or MNI152 run, then :func:`prepare`'s (raw folder,
    dataset id, plans name, vocabulary name)."""
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = benchmark_env(work)
    log = work / log_name
    return (work, env, log) + prepare(args.dataset, work, env, log, args.test, args.spacing)


def read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def auc(pos: List[float], neg: List[float]) -> float:
    """Probability that a present structure scores above a foreign prompt (ties count half)."""
    p, n = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float(((p > n).sum() + 0.5 * (p == n).sum()) / (p.size * n.size))


def measure(pred: Path, raw: Path, vocab, paraphrases: Dict[str, List[str]], foreign: List[str]) -> dict:
    manifest = json.loads((pred / "manifest.json").read_text())
    out = {"foreign": {"n": 0, "empty": 0, "flagged": 0, "either": 0}, "wordings": {}, "main": {},
           "sim_foreign": [], "sim_heldout": [], "margin_foreign": [], "margin_heldout": [],
           "presence_present": [], "presence_foreign": [],
           "heldout_flagged": 0, "heldout_n": 0, "absent": {"n": 0, "empty": 0}, "flagged_dice": {}}
    for case, recs in sorted(manifest["cases"].items()):
        ref = read(raw / "labelsTs" / f"{case}.nii.gz")
        sizes = [int((ref == v).sum()) for v in np.unique(ref) if v > 0]
        smallest = min(sizes)
        for prompt in foreign:
            rec = recs[prompt]
            empty, flagged = rec["voxels"] <= 0.01 * smallest, rec["flag"] in UNKNOWN_FLAGS
            f = out["foreign"]
            f["n"] += 1
            f["empty"] += empty
            f["flagged"] += flagged
            f["either"] += empty or flagged
            out["sim_foreign"].append(rec["understood"]["similarity"])
            out["margin_foreign"].append(rec["understood"]["margin"])
            out["presence_foreign"].append(rec["presence"])
        for c in vocab.concepts:
            gt = np.isin(ref, c.labels)
            if not gt.any() and len(c.labels) == 1:  # a structure the case lacks: its main term must be empty
                out["absent"]["n"] += 1
                out["absent"]["empty"] += recs[c.main]["voxels"] <= 0.01 * smallest
            if not gt.any():
                continue
            for kind, words in (("main", [c.main]), ("synonym", list(c.synonyms)),
                                ("held-out", paraphrases.get(c.id, []))):
                for w in words:
                    rec = recs[w]
                    d = dice(read(pred / rec["file"]) > 0, gt)
                    out["wordings"].setdefault(c.id, {}).setdefault(kind, []).append(d)
                    if kind == "main" and len(c.labels) == 1:  # main-term Dice and presence: single structures
                        out["main"].setdefault(c.id, []).append(d)
                        out["presence_present"].append(rec["presence"])
                    if kind == "held-out":
                        if rec["flag"] in UNKNOWN_FLAGS:  # to tell the encoder's misses from the network's
                            out["flagged_dice"].setdefault(c.id, []).append(d)
                        seen = out.setdefault("heldout_concepts", {}).setdefault(c.id, {})  # understood as
                        seen[rec["understood"]["concept"]] = seen.get(rec["understood"]["concept"], 0) + 1
                        out["heldout_n"] += 1
                        out["heldout_flagged"] += rec["flag"] in UNKNOWN_FLAGS
                        out["sim_heldout"].append(rec["understood"]["similarity"])
                        out["margin_heldout"].append(rec["understood"]["margin"])
    return out


def section(dataset: str, results: Dict[str, dict], args, timings: Dict[str, Optional[float]], cases: int) -> str:
    dev = device_name(torch.device(args.device))
    lines = [f"<!-- robustness-{dataset} -->",
             f"## Language robustness: {dataset} ({datetime.date.today().isoformat()}, {dev})", "",
             f"Command: `python benchmarks/robustness.py --dataset {dataset} --workdir {args.workdir} --device "
             f"{args.device}{f' --spacing {args.spacing:g}' if dataset == 'mni152' else ''} --trainers "
             f"{' '.join(args.trainers)}{' --resume' if args.resume else ''}"
             f"{' --repredict' if args.repredict else ''}{' --remeasure' if args.remeasure else ''}`. {cases} held-out "
             f"cases; {len(PROMPTS['foreign'])} held-out foreign prompts; held-out paraphrases from "
             f"`benchmarks/robustness_prompts.json`; a prompt is flagged unknown below similarity "
             f"{DEFAULT_MIN_SIMILARITY} or less than {DEFAULT_MIN_MARGIN} above its nearest foreign phrases. Trainers "
             "have the demo's schedule (800 steps; those named `32epochs` 1600) and differ only in "
             "`foreign_prompt_probability` (0.2 / 0; `_demoForeign050_32epochs` 0.5), in "
             "`empty_target_tolerance` (None / 0.01, training/loss.py) or in `foreign_replaces_present` (False / "
             "True: the earlier rule, where a foreign prompt could replace a present concept; training/prompts.py). "
             + ", ".join(f"training '{k}' {v / 60:.1f} min" if v is not None else f"'{k}' trained in an "
                         "earlier run" for k, v in timings.items())
             + (" (--repredict: trained models reused, predicted again with today's code)" if args.repredict else "")
             + (" (--remeasure: trained models and predictions reused, measured again)" if args.remeasure else "")
             + ".", "",
             "| measure | " + " | ".join(results) + " |", "| --- |" + " --- |" * len(results)]

    def row(name, fn):
        lines.append(f"| {name} | " + " | ".join(fn(r) for r in results.values()) + " |")

    def pct(a, b):
        return f"{100 * a / max(1, b):.1f} % ({a}/{b})"

    row("foreign prompts empty (<= 1 % of smallest structure)", lambda r: pct(r["foreign"]["empty"], r["foreign"]["n"]))
    row("foreign prompts flagged unknown", lambda r: pct(r["foreign"]["flagged"], r["foreign"]["n"]))
    row("foreign prompts empty or flagged (target >= 95 %)", lambda r: pct(r["foreign"]["either"], r["foreign"]["n"]))
    row("held-out paraphrases flagged unknown (target 0)", lambda r: pct(r["heldout_flagged"], r["heldout_n"]))
    def own_concept(r):
        seen = r.get("heldout_concepts")
        if not seen:
            return "not recorded"
        return pct(sum(v.get(c, 0) for c, v in seen.items()), sum(sum(v.values()) for v in seen.values()))
    row("held-out paraphrases understood as their own concept", own_concept)
    row("absent structure's main term empty", lambda r: pct(r["absent"]["empty"], r["absent"]["n"])
        if "absent" in r else "not measured")
    row("mean Dice, main terms", lambda r: f"{np.mean([v for vs in r['main'].values() for v in vs]):.3f}")
    for cid in next(iter(results.values()))["main"]:
        row(f"Dice '{cid}' main term", lambda r, c=cid: f"{np.mean(r['main'][c]):.3f}")
    row("presence AUC, present structure vs foreign prompt",
        lambda r: f"{auc(r['presence_present'], r['presence_foreign']):.3f}")
    row("similarity: highest foreign / lowest held-out paraphrase",
        lambda r: f"{max(r['sim_foreign']):.3f} / {min(r['sim_heldout'] or [float('nan')]):.3f}")

    def margins(r):
        f, h = [m for m in r.get("margin_foreign", []) if m is not None], \
            [m for m in r.get("margin_heldout", []) if m is not None]
        return f"{max(f):.3f} / {min(h):.3f}" if f and h else "not recorded"
    row("margin over foreign phrases: highest foreign / lowest held-out paraphrase", margins)
    lines += ["", f"The margin threshold (`--min_margin`), from the similarities and margins this run recorded "
              f"(similarity threshold {DEFAULT_MIN_SIMILARITY} kept): share of foreign pairs / held-out paraphrase "
              "pairs flagged unknown", "", "| trainer | " + " | ".join(f"{m:g}" for m in MARGIN_SWEEP) + " |",
              "| --- |" + " --- |" * len(MARGIN_SWEEP)]

    def flagged(sims, margins, m):
        return np.mean([(s < DEFAULT_MIN_SIMILARITY) or (g < m) for s, g in zip(sims, margins)])
    for name, r in results.items():
        if not all(m is not None for m in r.get("margin_foreign", [None]) + r.get("margin_heldout", [None])):
            continue
        lines.append(f"| {name} | " + " | ".join(
            f"{100 * flagged(r['sim_foreign'], r['margin_foreign'], m):.1f} % / "
            f"{100 * flagged(r['sim_heldout'], r['margin_heldout'], m):.1f} %" for m in MARGIN_SWEEP) + " |")
    lines += ["", "Wordings (Dice over cases where the concept is present; SEER's measures per concept):", "",
              "| trainer | concept | wordings | mean | std | worst | mean - worst | held-out mean | held-out worst "
              "| mean - worst, wordings not flagged |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    rows = [(name, r) for name, r in results.items()]
    rows += [(f"{name}, `--wording nearest_term`", r["nearest_term"]) for name, r in results.items()
             if "nearest_term" in r]
    for name, r in rows:
        for cid, kinds in r["wordings"].items():
            allv = [v for vs in kinds.values() for v in vs]
            held = kinds.get("held-out", [])
            if "flagged_dice" in r:
                kept = list((Counter(allv) - Counter(r["flagged_dice"].get(cid, []))).elements())
                kept_gap = f"{np.mean(kept) - min(kept):.3f}" if kept else "none"
            else:
                kept_gap = "not recorded"
            lines.append(f"| {name} | {cid} | {sum(len(v) for v in kinds.values()) // max(1, len(kinds['main']))} | "
                         f"{np.mean(allv):.3f} | {np.std(allv):.3f} | {min(allv):.3f} | "
                         f"{np.mean(allv) - min(allv):.3f} | {np.mean(held) if held else float('nan'):.3f} | "
                         f"{min(held) if held else float('nan'):.3f} | {kept_gap} |")
    lines += ["", f"<!-- /robustness-{dataset} -->"]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = toy_or_mni_parser(__doc__, "robustness.md")
    p.add_argument("--trainers", nargs="+", choices=tuple(TRAINERS.values()), default=list(TRAINERS.values())[:2])
    p.add_argument("--resume", action="store_true",
                   help="reuse a trainer's saved results in the workdir instead of training it again")
    p.add_argument("--repredict", action="store_true",
                   help="reuse a trainer's trained model in the workdir, but predict and measure again")
    p.add_argument("--remeasure", action="store_true",
                   help="reuse a trainer's trained model and predictions in the workdir, and measure again")
    args = p.parse_args(argv)
    work, env, log, raw, did, plans, vocab_name = prepare_run(args, "robustness.log")
    vocab = load_vocabulary(resolve_vocabulary_path(vocab_name))
    paraphrases = PROMPTS["paraphrases"].get(vocab_name, {})
    foreign = PROMPTS["foreign"]
    prompts = list(dict.fromkeys(vocab.all_terms() + [w for ws in paraphrases.values() for w in ws] + foreign))
    prompt_file = work / "prompts.txt"
    prompt_file.write_text("\n".join(prompts) + "\n", encoding="utf-8")
    wording_file = work / "wordings.txt"
    wording_file.write_text("\n".join(p for p in prompts if p not in foreign) + "\n", encoding="utf-8")
    results, timings = {}, {}
    for label, trainer in TRAINERS.items():
        if trainer not in args.trainers:
            continue
        saved = work / f"results_{trainer}.json"
        if args.resume and saved.is_file():
            results[label] = json.loads(saved.read_text())
            timings[label] = results[label].get("training_seconds")  # None: saved before it was recorded
            continue
        model = Path(env["nnUNet_results"]) / raw.name / f"{trainer}__{plans}__3d_fullres" / "fold_all"
        pred, near = work / f"pred_{trainer}", work / f"pred_{trainer}_nearest_term"
        earlier_training = json.loads(saved.read_text()).get("training_seconds") if saved.is_file() else None
        if args.remeasure and (pred / "manifest.json").is_file() and (near / "manifest.json").is_file():
            timings[label] = earlier_training
            results[label] = {**measure(pred, raw, vocab, paraphrases, foreign), "training_seconds": timings[label],
                              "nearest_term": measure(near, raw, vocab, paraphrases, [])}
            saved.write_text(json.dumps(results[label], indent=1))
            continue
        if args.repredict and (model / "checkpoint_final.pth").is_file():
            timings[label] = earlier_training
        else:
            t = time.time()
            run([command("nnUNetv2_train"), str(did), "3d_fullres", "all", "-tr", trainer, "-p", plans,
                 "-device", args.device], env, log)
            timings[label] = time.time() - t
        if pred.exists():  # a fresh prediction, not one resumed from an earlier code's files
            shutil.rmtree(pred)
        run([command("nnUNetv2_text_predict"), "-i", str(raw / "imagesTs"), "-o", str(pred), "--prompts",
             str(prompt_file), "-d", str(did), "-c", "3d_fullres", "-f", "all", "-tr", trainer, "-p", plans,
             "-device", args.device, "-npp", "1", "-nps", "1", "--wording", "as_written"], env, log)
        results[label] = {**measure(pred, raw, vocab, paraphrases, foreign), "training_seconds": timings[label]}
        # the same wordings, each known one given to the network as its nearest training term
        if near.exists():
            shutil.rmtree(near)
        run([command("nnUNetv2_text_predict"), "-i", str(raw / "imagesTs"), "-o", str(near), "--prompts",
             str(wording_file), "-d", str(did), "-c", "3d_fullres", "-f", "all", "-tr", trainer, "-p", plans,
             "-device", args.device, "-npp", "1", "-nps", "1", "--wording", "nearest_term"], env, log)
        results[label]["nearest_term"] = measure(near, raw, vocab, paraphrases, [])
        saved.write_text(json.dumps(results[label], indent=1))
    text = section(args.dataset, results, args, timings, args.test)
    write_section(Path(args.out), f"robustness-{args.dataset}", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
