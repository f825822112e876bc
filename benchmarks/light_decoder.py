"""Issue #14: Dice of the light decoder (top decoder stages shared by all prompts) and, for issue #25, of the
shared decoder (every stage shared; the default since) against every decoder stage per prompt, same data,
same plans, same schedule, one after the other on the same machine. Writes a section of
docs/results/light_decoder.md; the speed side is benchmarks/train_step.py and predict_prompts.py with ``--designs``.

Every step is the real command (dataset -> nnUNetv2_plan_and_preprocess -> nnUNetv2_text_embed ->
nnUNetv2_train, once per trainer -> nnUNetv2_text_predict with every single-label concept's main term).
nnU-Net does not seed its data loading, so two runs of one trainer differ too; ``--repeats`` trains each
trainer more than once (fold all each time, a fresh results folder) to show that spread.

    python benchmarks/light_decoder.py --dataset toy --workdir /tmp/light_toy --device cpu
    python benchmarks/light_decoder.py --dataset mni152 --workdir /tmp/light_mni --device cpu --spacing 6
"""
from __future__ import annotations

import datetime
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from nnunetv2_text.demo.pipeline import command, dice_table, run
from nnunetv2_text.text.vocabulary import load_vocabulary, resolve_vocabulary_path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, git_commit, toy_or_mni_parser, write_section  # noqa: E402
from robustness import prepare_run  # noqa: E402  (the same datasets as the robustness benchmark)

#: the reference design the others are measured against (the default until issue #25)
REFERENCE = "TextFusionTrainer_demoEveryStage"
LABELS = {REFERENCE: "every stage per prompt (the default until #25)",
          "TextFusionTrainer_demoShared": "shared decoder (every stage shared, a read-out per prompt; the default "
                                         "since #25)",
          "TextFusionTrainer_demoLight": "light decoder (top 2 stages shared)",
          "TextFusionTrainer_demoLight1": "light decoder (top stage shared)"}


def summarise(rows: List[Dict]) -> Dict:
    """Mean Dice per concept over the cases where it is present, and absent structures predicted empty."""
    per: Dict[str, List[float]] = {}
    absent = absent_empty = 0
    for r in rows:
        if r["present"]:
            per.setdefault(r["concept"], []).append(r["dice"])
        else:
            absent += 1
            absent_empty += r["pred_voxels"] == 0
    concepts = {c: float(np.mean(v)) for c, v in sorted(per.items())}
    return {"concepts": concepts, "mean": float(np.mean(list(concepts.values()))), "absent": absent,
            "absent_empty": absent_empty}


def main(argv=None) -> int:
    p = toy_or_mni_parser(__doc__, "light_decoder.md")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--trainers", nargs="+", choices=tuple(LABELS), default=list(LABELS)[:2],
                   help="designs to train; runs of earlier invocations in the same workdir are kept, and new "
                        "runs are added to them")
    args = p.parse_args(argv)
    work, env, log, raw, did, plans, vocab_name = prepare_run(args, "light_decoder.log")
    vocab = load_vocabulary(resolve_vocabulary_path(vocab_name))
    prompts = [c.main for c in vocab.concepts if len(c.labels) == 1]
    prompt_file = work / "prompts.txt"
    prompt_file.write_text("\n".join(prompts) + "\n", encoding="utf-8")
    results_file = work / "results.json"
    results: Dict[str, List[Dict]] = json.loads(results_file.read_text()) if results_file.is_file() else {}
    for trainer in args.trainers:
        label = LABELS[trainer]
        done = len(results.get(label, []))  # runs of earlier invocations in this workdir are kept
        for rep in range(done, done + args.repeats):
            results_dir = Path(env["nnUNet_results"])
            for old in results_dir.glob(f"Dataset{did}_*/{trainer}__*"):  # a repeat trains from scratch
                shutil.rmtree(old)
            t = time.time()
            run([command("nnUNetv2_train"), str(did), "3d_fullres", "all", "-tr", trainer, "-p", plans,
                 "-device", args.device], env, log)
            train_s = time.time() - t
            pred = work / f"pred_{trainer}_{rep}"
            shutil.rmtree(pred, ignore_errors=True)
            t = time.time()
            run([command("nnUNetv2_text_predict"), "-i", str(raw / "imagesTs"), "-o", str(pred), "--prompts",
                 str(prompt_file), "-d", str(did), "-c", "3d_fullres", "-f", "all", "-tr", trainer, "-p", plans,
                 "-device", args.device, "-npp", "1", "-nps", "1"], env, log)
            summary = summarise(dice_table(pred, raw / "labelsTs", vocab_name))
            summary.update(train_s=train_s, predict_s=time.time() - t)
            results.setdefault(label, []).append(summary)
            results_file.write_text(json.dumps(results, indent=1))
    concepts = sorted({c for runs in results.values() for r in runs for c in r["concepts"]})
    lines = [f"<!-- light-decoder-{args.dataset} -->",
             f"## Decoder designs against every stage per prompt: {args.dataset} ({datetime.date.today().isoformat()}, "
             f"{device_name(torch.device(args.device))}, commit {git_commit()})", "",
             f"Command: `python benchmarks/light_decoder.py --dataset {args.dataset} --device {args.device} "
             f"--test {args.test} --repeats {args.repeats} --trainers {' '.join(args.trainers)}" + (f" --spacing {args.spacing:g}`" if args.dataset ==
                                                              "mni152" else "`") +
             f". Plans `{plans}`, fold all, the demo schedule (800 steps, lr 3e-3) for both; Dice of each "
             f"single-label concept's main term on the {args.test} held-out cases where it is present.", "",
             "| decoder | run | " + " | ".join(concepts) + " | mean | absent predicted empty | training s |",
             "|---|---|" + "---|" * len(concepts) + "---|---|---|"]
    for label, runs in results.items():
        for i, r in enumerate(runs):
            lines.append(f"| {label} | {i + 1} | " + " | ".join(f"{r['concepts'].get(c, float('nan')):.3f}"
                                                              for c in concepts)
                         + f" | {r['mean']:.3f} | {r['absent_empty']}/{r['absent']} | {r['train_s']:.0f} |")
    means = {label: float(np.mean([r["mean"] for r in runs])) for label, runs in results.items()}
    base = means.get(LABELS[REFERENCE])
    lines += ["", "Mean Dice over runs: " + ", ".join(
        f"{label} {m:.3f}" + (f" ({m - base:+.3f})" if base is not None and label != LABELS[REFERENCE]
                              else "") for label, m in means.items()) + " (target: within 0.01 of every stage per prompt).",
              "", f"<!-- /light-decoder-{args.dataset} -->"]
    text = "\n".join(lines)
    write_section(Path(args.out), f"light-decoder-{args.dataset}", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
