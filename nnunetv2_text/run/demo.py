"""``nnUNetv2_text_demo``: the whole product on an embedded toy dataset, on the CPU, in minutes.

Builds a toy dataset (ball, box, rod: only the prompt says which), plans it with the real ResEncM
planner, embeds its vocabulary with the bundled MiniLM, trains TextFusionTrainer_demo, predicts the
held-out cases with a prompt file and prints the Dice of every (case, prompt) and the folder of the
pictures of its answers (one PNG per case: each prompt's mask outlined on the image).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="nnunetv2_text_demo", help="folder for nnUNet_raw/preprocessed/results")
    p.add_argument("-device", default="cpu", help="cpu or cuda")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    from nnunetv2_text.demo.pipeline import overlay_folder, run_demo

    rows = run_demo(Path(args.workdir), device=args.device)
    print(f"\n{'case':<10} {'prompt':<14} {'present':<8} {'voxels':>7} {'dice':>6}")
    for r in rows:  # an absent structure has no Dice: the right answer is 0 predicted voxels
        dice = f"{r['dice']:>6.3f}" if r["present"] else f"{'-':>6}"
        print(f"{r['case']:<10} {r['prompt']:<14} {str(r['present']):<8} {r['pred_voxels']:>7} {dice}")
    pos = [r["dice"] for r in rows if r["present"]]
    neg = [r for r in rows if not r["present"]]
    print(f"\nmean Dice of present structures: {sum(pos) / max(1, len(pos)):.3f}; "
          f"absent structures predicted empty: {sum(r['pred_voxels'] == 0 for r in neg)}/{len(neg)}")
    print(f"pictures of the answers (each prompt outlined on its image): {overlay_folder(Path(args.workdir))}")
    print(json.dumps({"workdir": str(Path(args.workdir).resolve())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
