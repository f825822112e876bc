"""``nnUNetv2_text_evaluate``: score prompt predictions (or CoWTalk refinements) against reference label maps."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

from nnunetv2_text.evaluation.cowtalk import evaluate_cowtalk
from nnunetv2_text.evaluation.manifest import EvaluationInputError
from nnunetv2_text.evaluation.report import evaluate_folder
from nnunetv2_text.run.cli import user_errors_to_exit


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nnUNetv2_text_evaluate",
        description="Writes metrics.csv, summary.json, report.md and PNG plots into -o. See docs/EVALUATION.md.")
    p.add_argument("-p", "--pred", required=True, help="prediction folder (manifest.json + masks)")
    p.add_argument("-r", "--ref", required=True, help="reference label maps <case_id><file_ending>")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--vocab", help="vocabulary file or shipped name (required unless --cowtalk)")
    p.add_argument("--nsd_tolerance", type=float, default=1.0, help="NSD tolerance in mm (default 1.0)")
    p.add_argument("--paraphrases", help="JSON {concept id or main term: [wordings]} for robustness statistics")
    p.add_argument("--tubular", nargs="+", default=None,
                   help="concept ids that get clDice, or 'all' (default: all for a vocabulary named TopCoW, else none)")
    p.add_argument("--cowtalk", metavar="RAW_DATASET_FOLDER",
                   help="CoWTalk mode: -p holds refined label maps, this is the converted CoWTalk raw dataset")
    p.add_argument("--sources", help="a merged dataset's sources.json (default: the one beside -r, if any): "
                                     "(case, prompt) pairs its source does not annotate are skipped and counted")
    p.add_argument("--save_overlays", metavar="IMAGES_FOLDER",
                   help="draw overlays/<case>.png into -o: each prompt's mask and its reference outlined on the "
                        "case's image (IMAGES_FOLDER/<case>_0000<ending>, the prediction's input)")
    p.add_argument("--num_processes", type=int, default=min(4, os.cpu_count() or 1))
    p.add_argument("-v", "--verbose", action="store_true")
    return p


@user_errors_to_exit("nnUNetv2_text_evaluate")
def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    if args.cowtalk and args.save_overlays:
        raise EvaluationInputError("--save_overlays draws prompt masks; --cowtalk evaluates refined label maps")
    if args.cowtalk:
        evaluate_cowtalk(args.pred, args.ref, args.cowtalk, args.out, args.num_processes)
    else:
        if not args.vocab:
            raise EvaluationInputError("--vocab is required (unless --cowtalk is given)")
        evaluate_folder(args.pred, args.ref, args.vocab, args.out, args.nsd_tolerance, args.paraphrases,
                        args.tubular, args.num_processes, args.sources, args.save_overlays)
    print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
