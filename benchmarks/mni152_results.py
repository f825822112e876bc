"""Real anatomy: train on the MNI152-derived dataset, predict held-out subjects, report Dice per prompt and
the left/right confusion rate in docs/results/mni152.md.

Every step is the real command: nnUNetv2_text_convert_mni152 -> nnUNetv2_plan_and_preprocess (ResEncM) ->
nnUNetv2_text_embed -> nnUNetv2_train -tr TRAINER -> nnUNetv2_text_predict --prompts (every concept's main
term; with --paraphrases also every synonym) -> nnUNetv2_text_evaluate.

    # GPU (what issue #5 asks for)
    python benchmarks/mni152_results.py --workdir /tmp/mni --trainer TextFusionTrainer_100epochs --device cuda
    # CPU trial: 3 mm subjects, narrow plans, a short schedule
    python benchmarks/mni152_results.py --workdir /tmp/mni --trainer TextFusionTrainer_demo --device cpu \
        --spacing 3 --small
"""
from __future__ import annotations

import datetime
import json
import sys
import time
from pathlib import Path

import torch

from nnunetv2_text.demo.pipeline import command, nnunet_env, run
from nnunetv2_text.text.vocabulary import load_vocabulary, resolve_vocabulary_path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, device_name, pipeline_parser, plan_resenc_m  # noqa: E402

DATASET_ID = 994


def _fmt(v) -> str:
    return "-" if v is None else f"{float(v):.3f}"


def main(argv=None) -> int:
    p = pipeline_parser(__doc__, "TextFusionTrainer_100epochs", 20, 5, str(RESULTS / "mni152.md"))
    p.add_argument("--spacing", type=float, default=2.0)
    p.add_argument("--paraphrases", action="store_true", help="also predict every synonym (robustness table)")
    args = p.parse_args(argv)
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = nnunet_env(work)
    log = work / "mni152.log"
    did = str(DATASET_ID)
    timings = {}

    t = time.time()
    run([command("nnUNetv2_text_convert_mni152"), "-d", did, "-n", str(args.subjects), "--test", str(args.test),
         "--spacing", str(args.spacing), "--overwrite"], env, log)
    raw = next(Path(env["nnUNet_raw"]).glob(f"Dataset{DATASET_ID}_*"))
    plans = plan_resenc_m(DATASET_ID, raw, env, log, args.small)
    run([command("nnUNetv2_text_embed"), "-d", did], env, log)
    timings["prepare_s"] = time.time() - t

    t = time.time()
    run([command("nnUNetv2_train"), did, "3d_fullres", "all", "-tr", args.trainer, "-p", plans,
         "-device", args.device], env, log)
    timings["train_s"] = time.time() - t

    vocab = load_vocabulary(resolve_vocabulary_path("mni152"))
    prompts = [c.main for c in vocab.concepts]
    paraphrase_file = None
    if args.paraphrases:
        wordings = {c.id: [c.main] + list(c.synonyms) for c in vocab.concepts}
        prompts = [w for ws in wordings.values() for w in ws]
        paraphrase_file = work / "paraphrases.json"
        paraphrase_file.write_text(json.dumps(wordings, indent=1), encoding="utf-8")
    prompt_file = work / "prompts.txt"
    prompt_file.write_text("\n".join(prompts) + "\n", encoding="utf-8")

    t = time.time()
    pred = work / "predictions"
    run([command("nnUNetv2_text_predict"), "-i", str(raw / "imagesTs"), "-o", str(pred), "--prompts",
         str(prompt_file), "-d", did, "-c", "3d_fullres", "-f", "all", "-tr", args.trainer, "-p", plans,
         "-device", args.device], env, log)
    timings["predict_s"] = time.time() - t

    report = work / "report"
    cmd = [command("nnUNetv2_text_evaluate"), "-p", str(pred), "-r", str(raw / "labelsTs"), "--vocab", "mni152",
           "-o", str(report), "--nsd_tolerance", str(args.spacing)]
    if paraphrase_file:
        cmd += ["--paraphrases", str(paraphrase_file)]
    run(cmd, env, log)
    summary = json.loads((report / "summary.json").read_text())
    (work / "timings.json").write_text(json.dumps(timings, indent=1))
    Path(args.out).write_text(render(summary, args, plans, timings), encoding="utf-8")
    print(Path(args.out).read_text())
    return 0


def render(summary: dict, args, plans: str, timings: dict) -> str:
    device = device_name(torch.device(args.device))
    lines = [f"# Results on real anatomy: MNI152 ({datetime.date.today().isoformat()}, {device})", "",
             f"Dataset: `nnUNetv2_text_convert_mni152`, {args.subjects} training and {args.test} held-out "
             f"subjects at {args.spacing:g} mm (deformed, intensity-varied copies of the MNI152 2009a template). "
             f"Trainer `{args.trainer}`, plans `{plans}`, fold `all`; prompts: each concept's main term"
             f"{' and every synonym' if args.paraphrases else ''}. Produced by `benchmarks/mni152_results.py`; "
             f"training took {timings['train_s'] / 60:.1f} min, prediction {timings['predict_s'] / 60:.1f} min.",
             "", f"NSD tolerance {args.spacing:g} mm (one voxel).", "",
             "| concept | prompt | Dice | NSD | HD95 (mm) |", "| --- | --- | --- | --- | --- |"]
    for cid, b in summary["per_concept"].items():
        lines.append(f"| {cid} | {b['main']} | {_fmt(b['dice']['mean'])} ± {_fmt(b['dice']['std'])} | "
                     f"{_fmt(b['nsd']['mean'])} | {_fmt(b['hd95_mm']['mean'])} |")
    lines += ["", f"Mean Dice over concepts: {_fmt(summary['overall']['concept_mean_dice'])}.", ""]
    if summary.get("left_right"):
        lines += ["## Left/right confusion", "",
                  "Wrong-side fraction: share of a lateral prompt's predicted voxels inside the reference of its "
                  "mirror concept. Confusion rate: share of predictions that lie mostly (> 50 %) on the wrong side.",
                  "", "| concept | mirror concept | predictions | mean wrong-side fraction | confusion rate |",
                  "| --- | --- | --- | --- | --- |"]
        for cid, r in summary["left_right"].items():
            lines.append(f"| {cid} | {r['counterpart']} | {r['n_nonempty']} | {_fmt(r['mean_wrong_side_fraction'])} "
                         f"| {_fmt(r['confusion_rate'])} |")
        lines.append("")
    if summary.get("robustness"):
        lines += ["## Robustness over wordings (SEER)", "", "| concept | wordings | mean | worst | gap |",
                  "| --- | --- | --- | --- | --- |"]
        for cid, r in summary["robustness"].items():
            lines.append(f"| {cid} | {r['n_wordings']} | {_fmt(r['mean_dice'])} | {_fmt(r['worst_dice'])} | "
                         f"{_fmt(r['gap'])} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
