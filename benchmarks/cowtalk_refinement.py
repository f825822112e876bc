"""CoWTalk on the phantom: per error type, Dice / clDice / Betti-0 of the erroneous input vs the refined
output on held-out subjects (the paper's Table 1 / figure 6 layout), written to docs/COWTALK_RESULTS.md.

Every step is the real command: phantom -> nnUNetv2_text_convert_cowtalk (with a train/test split) ->
nnUNetv2_plan_and_preprocess (ResEncM) -> nnUNetv2_text_embed -> nnUNetv2_train -tr TRAINER ->
nnUNetv2_text_predict --instructions -> nnUNetv2_text_evaluate --cowtalk.

    python benchmarks/cowtalk_refinement.py --workdir /tmp/cowtalk --trainer CoWTalkRefineTrainer_5epochs \
        --device cuda --subjects 10 --test 3 --variants 8
"""
from __future__ import annotations

import csv
import datetime
import json
import sys
from pathlib import Path

import torch

from dataset_conversion.cowtalk.phantom import write_phantom_topcow
from nnunetv2_text.demo.pipeline import command, nnunet_env, run

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, pipeline_parser, plan_resenc_m  # noqa: E402

DATASET_ID = 993


def main(argv=None) -> int:
    p = pipeline_parser(__doc__, "CoWTalkRefineTrainer_5epochs", 10, 3, "docs/COWTALK_RESULTS.md")
    p.add_argument("--variants", type=int, default=8)
    args = p.parse_args(argv)
    work = Path(args.workdir).resolve()
    env = nnunet_env(work)
    log = work / "cowtalk.log"
    topcow = work / "topcow"
    subjects = write_phantom_topcow(topcow, n_subjects=args.subjects, modalities=("ct",), seed=0)
    split = work / "split.json"
    split.write_text(json.dumps({"train": subjects[:-args.test], "test": subjects[-args.test:]}))
    run([command("nnUNetv2_text_convert_cowtalk"), "-i", str(topcow), "-d", str(DATASET_ID), "--variants",
         str(args.variants), "--modality", "ct", "--split", str(split), "--overwrite"], env, log)
    raw = next(Path(env["nnUNet_raw"]).glob(f"Dataset{DATASET_ID}_*"))
    plans = plan_resenc_m(DATASET_ID, raw, env, log, args.small)
    run([command("nnUNetv2_text_embed"), "-d", str(DATASET_ID)], env, log)
    run([command("nnUNetv2_train"), str(DATASET_ID), "3d_fullres", "all", "-tr", args.trainer, "-p", plans,
         "-device", args.device], env, log)
    instructions = {"cases": {}}
    for f in sorted((raw / "instructionsTs").glob("*.json")):
        rec = json.loads(f.read_text())
        instructions["cases"][rec["case_id"]] = rec["instruction_short"] or "Leave the segmentation unchanged."
    ifile = work / "instructions.json"
    ifile.write_text(json.dumps(instructions))
    pred = work / "refined"
    run([command("nnUNetv2_text_predict"), "-i", str(raw / "imagesTs"), "-o", str(pred), "--instructions",
         str(ifile), "-d", str(DATASET_ID), "-c", "3d_fullres", "-f", "all", "-tr", args.trainer, "-p", plans,
         "-device", args.device], env, log)
    report = work / "report"
    run([command("nnUNetv2_text_evaluate"), "--cowtalk", str(raw), "-p", str(pred), "-r", str(raw / "labelsTs"),
         "--vocab", str(raw / "vocabulary.json"), "-o", str(report)], env, log)
    rows = list(csv.DictReader(open(report / "cowtalk_table.csv")))
    device = device_name(torch.device(args.device))
    lines = [f"# CoWTalk refinement on the phantom ({datetime.date.today().isoformat()}, {device})", "",
             f"Trainer `{args.trainer}`, plans `{plans}`, {args.subjects - args.test} training subjects x "
             f"{args.variants} variants, {args.test} held-out subjects; one refinement step with the short "
             "instruction. Produced by `benchmarks/cowtalk_refinement.py`.", "",
             "| error type | cases | Dice in | Dice out | clDice in | clDice out | Betti-0 err in | Betti-0 err out |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    fmt = lambda v: f"{float(v):.3f}" if v not in ("", None, "nan") else "-"  # noqa: E731
    for r in rows:
        lines.append(f"| {r['error_type']} | {r['n_cases']} | {fmt(r['dice_input'])} | {fmt(r['dice_refined'])} | "
                     f"{fmt(r['cldice_input'])} | {fmt(r['cldice_refined'])} | {fmt(r['betti0_input'])} | "
                     f"{fmt(r['betti0_refined'])} |")
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
