"""Does weighting the voxels an instruction edits make the refiner read the verb? (issue #26)

The in-process setting of tests/test_refinement_learning.py (two vessels, one thickened or thinned, repairs
and their inverses, the conversion's sentences, MiniLM, direction channels, 150 steps), trained with
``CoWTalkRefineTrainer``'s edit-voxel term at each weight, three seeds; named-vessel Dice of held-out
repairs with the right and the contrary instruction. These synthetic draws choose the weight; the phantom's
held-out subjects (benchmarks/cowtalk_refinement.py) are never used for it. Writes
docs/results/refiner_edit_weight.md.

    python benchmarks/refiner_edit_weight.py [--weights 0 0.1 0.3 1] [--seeds 0 1 2]
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from common import RESULTS, device_name, git_commit  # noqa: E402
from test_refinement_learning import verb_scores  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.1, 0.3, 1.0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default=str(RESULTS / "refiner_edit_weight.md"))
    args = p.parse_args(argv)
    rows = []
    for w in args.weights:
        runs = [verb_scores(direction_channels=True, edit_voxel_weight=w, seed=s) for s in args.seeds]
        right, contrary = (np.array([r[k] for r in runs]) for k in ("right", "contrary"))
        rows.append(f"| {w:g} | {right.mean():.3f} ({', '.join(f'{v:.2f}' for v in right)}) | "
                    f"{contrary.mean():.3f} | {(right - contrary).mean():+.3f} | {runs[0]['input']:.3f} |")
    lines = [f"# Edit-voxel weight of the refiner, in process ({datetime.date.today().isoformat()}, "
             f"{device_name(torch.device('cpu'))}, commit {git_commit()})", "",
             f"Command: `python benchmarks/refiner_edit_weight.py --weights {' '.join(f'{w:g}' for w in args.weights)} "
             f"--seeds {' '.join(map(str, args.seeds))}`. Named-vessel Dice on 16 held-out repairs per seed, "
             "mean over seeds (per seed in brackets); 'input' is the first seed's erroneous input.", "",
             "| edit-voxel weight | right | contrary | right - contrary | input |", "| --- | --- | --- | --- | --- |",
             *rows, ""]
    Path(args.out).write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
