"""``nnUNetv2_text_predict``: nnUNetv2_predict's flags, plus ``--prompts FILE``.

Writes ``<case>_<prompt slug><ending>`` (one binary mask per prompt, in the input's geometry) and
``manifest.json`` into the output folder. See docs/PREDICTION.md.

nnU-Net's own spellings are accepted exactly (``-step_size``, ``-num_parts``, ``-part_id``,
``--continue_prediction``/``--c``, ``--disable_progress_bar``, ``--verbose``, ``--not_on_device``), so a
``nnUNetv2_predict`` command line only needs ``--prompts`` added; the double-dash forms of earlier
versions of this command stay as aliases.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from nnunetv2_text.errors import UserInputError
from nnunetv2_text.inference.prompt_file import (DEFAULT_MIN_MARGIN, DEFAULT_MIN_SIMILARITY, DEFAULT_WORDING, ON_UNKNOWN,
                                                 WORDINGS)
from nnunetv2_text.run.cli import user_errors_to_exit

PROG = "nnUNetv2_text_predict"


def build_parser() -> argparse.ArgumentParser:
    """``nnUNetv2_predict``'s flags in its spelling, plus prompts, understanding and refinement."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-i", required=True, help="input folder (nnU-Net naming: CASE_0000.nii.gz, ...)")
    p.add_argument("-o", required=True, help="output folder")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompts", help="prompt file: one prompt per line, or JSON "
                                        '{"prompts": [...], "cases": {"CASE": [...]}}; or "all": every single-label '
                                        "concept of the model by its main term (a line 'all' in a file does the same)")
    what.add_argument("--instructions", help="refinement models (CoWTalk): instruction file, plain text or JSON "
                                             '{"cases": {"CASE": "text" | ["chunk 1", "chunk 2"]}, "default": ...}')
    p.add_argument("--iterations", type=int, default=1,
                   help="refinement: repeat a single instruction this many times (each output fed back)")
    p.add_argument("--max_rounds", type=int, default=10,
                   help="refinement: the most instructions (rounds) one case may have (default: 10)")
    p.add_argument("--edit_scope", choices=("named", "all"), default="named",
                   help="refinement: 'named' (default) lets a round change only the vessels its instruction names, "
                        "and never add a vessel island; 'all' takes the network's output everywhere")
    _model_and_inference_args(p)
    _output_and_job_args(p)
    _understanding_args(p)
    return p


def _model_and_inference_args(p: argparse.ArgumentParser) -> None:
    """Which model, and how nnU-Net's sliding window runs it."""
    p.add_argument("-d", help="dataset id or name (with -c, -tr, -p; or give the model folder with -m)")
    p.add_argument("-c", help="configuration, e.g. 3d_fullres")
    p.add_argument("-m", help="trained model folder (as nnUNetv2_predict_from_modelfolder's -m); replaces -d/-c/-tr/-p")
    p.add_argument("-f", nargs="+", default=["0", "1", "2", "3", "4"], help="folds (default: 0 1 2 3 4)")
    p.add_argument("-tr", default="TextFusionTrainer", help="trainer (default: TextFusionTrainer)")
    p.add_argument("-p", default="nnUNetResEncUNetMPlans", help="plans identifier (default: nnUNetResEncUNetMPlans)")
    p.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint name (default: checkpoint_final.pth)")
    p.add_argument("-step_size", "--step_size", dest="step_size", type=float, default=0.5,
                   help="sliding-window step as a fraction of the patch (default 0.5)")
    p.add_argument("--disable_tta", action="store_true", help="no mirroring (left-right is never mirrored anyway)")


def _output_and_job_args(p: argparse.ArgumentParser) -> None:
    """What is written, and how the work is split (processes, array jobs, device)."""
    p.add_argument("--verbose", action="store_true", help="log nnU-Net's per-case details")
    p.add_argument("--save_probabilities", action="store_true", help="also write <case>_<slug>.npz probabilities")
    p.add_argument("--save_overlays", action="store_true",
                   help="also draw overlays/<case>.png: three slices through each prompt's mask, outlined, with "
                        "a legend of what each prompt was understood as (docs/PREDICTION.md#overlay-pictures)")
    p.add_argument("--save_combined", action="store_true",
                   help="also write <case>.nii.gz: one label map of the prompts understood as single-label concepts, "
                        "values and names of the training dataset.json, a voxel claimed twice going to the higher "
                        "probability (open one file in Slicer or ITK-SNAP)")
    p.add_argument("--continue_prediction", "--c", dest="continue_prediction", action="store_true",
                   help="skip cases already finished")
    p.add_argument("-npp", type=int, default=3, help="preprocessing processes")
    p.add_argument("-nps", type=int, default=3, help="export processes")
    p.add_argument("-num_parts", "--num_parts", dest="num_parts", type=int, default=1,
                   help="number of parts the cases are split into (cluster array jobs)")
    p.add_argument("-part_id", "--part_id", dest="part_id", type=int, default=0,
                   help="this job's part, 0 .. num_parts-1")
    p.add_argument("-device", default="cuda", help="cuda, cpu or mps")
    p.add_argument("--disable_progress_bar", action="store_true", help="no tqdm progress bars")
    p.add_argument("--not_on_device", action="store_true",
                   help="keep the sliding-window aggregation in CPU memory (large images on small GPUs)")


def _understanding_args(p: argparse.ArgumentParser) -> None:
    """How prompts are read: unknown prompts, wordings, the embedding cache."""
    p.add_argument("--on_unknown", choices=ON_UNKNOWN, default="warn",
                   help="an unknown prompt (see --min_similarity and --min_margin): warn "
                        "(write the mask, flag it in the manifest), empty (write an empty mask, flagged) or "
                        "error (refuse before writing anything). Default: warn")
    p.add_argument("--min_similarity", type=float, default=None,
                   help="cosine similarity (after centring) below which a prompt is unknown "
                        f"(default: {DEFAULT_MIN_SIMILARITY}, docs/DECISIONS.md)")
    p.add_argument("--min_margin", type=float, default=None,
                   help="a prompt is also unknown when its nearest training term beats the mean similarity of "
                        "its nearest foreign phrases (taught to give nothing) by less than this "
                        f"(default: {DEFAULT_MIN_MARGIN}, docs/DECISIONS.md)")
    p.add_argument("--wording", choices=WORDINGS, default=DEFAULT_WORDING,
                   help="what the network is given for a known prompt: its own embedding (as_written, as "
                        "VoxTell does) or its nearest training term's (nearest_term: the answer depends on the "
                        "concept the prompt was understood as, recorded in the manifest, not on its wording). "
                        f"Default: {DEFAULT_WORDING}")
    p.add_argument("--prompt_batch_size", type=int, default=0,
                   help="prompts decoded together per tile (default 0: measured on the first tile, see docs/PERFORMANCE.md)")
    p.add_argument("--cache", default=None, help="embedding cache (default: the model folder's text/ cache)")
    p.add_argument("--text_device", default="cpu", help="device for encoding prompts missing from the cache")


def model_folder(args: argparse.Namespace) -> str:
    if args.m:
        return args.m
    if not (args.d and args.c):
        raise UserInputError("give the model with -d DATASET -c CONFIGURATION [-tr TRAINER -p PLANS], or with -m FOLDER")
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    return get_output_folder(args.d, args.tr, args.p, args.c)


@user_errors_to_exit(PROG)
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    import torch

    from nnunetv2_text.inference.folder import FolderOptions, list_input_cases, predict_folder
    from nnunetv2_text.inference.plan import Understanding
    from nnunetv2_text.inference.predictor import TextPredictor
    from nnunetv2_text.inference.prompt_file import (DEFAULT_MIN_MARGIN, DEFAULT_MIN_SIMILARITY, read_instruction_file,
                                                     read_prompt_file)
    from nnunetv2_text.inference.refine import refine_folder
    from nnunetv2_text.training import ensure_ext_trainer_env

    if args.instructions and args.save_combined:
        raise UserInputError("--save_combined writes one label map of the prompted structures; a refinement model "
                             "(--instructions) writes its label map already")
    if args.instructions and args.save_overlays:
        raise UserInputError("--save_overlays draws prompt masks; a refinement model writes label maps (open them "
                             "with their image in a viewer)")
    ensure_ext_trainer_env()
    spec = read_instruction_file(args.instructions) if args.instructions else read_prompt_file(args.prompts)
    if not 0 <= args.part_id < args.num_parts:  # before loading anything heavy
        raise UserInputError(f"-part_id must be in [0, {args.num_parts - 1}], got {args.part_id}")
    folder = model_folder(args)
    device = torch.device(args.device)
    predictor = TextPredictor(tile_step_size=args.step_size, use_mirroring=not args.disable_tta,
                              perform_everything_on_device=device.type == "cuda" and not args.not_on_device,
                              device=device, verbose=args.verbose, allow_tqdm=not args.disable_progress_bar,
                              prompt_batch_size=args.prompt_batch_size)
    folds = [f if f == "all" else int(f) for f in args.f]
    predictor.initialize_from_trained_model_folder(folder, folds, args.chk)
    refinement_model = "cowtalk" in predictor.dataset_json
    if refinement_model and args.save_combined:
        raise UserInputError(f"--save_combined: {folder} is a refinement model (CoWTalk), whose answer is a label "
                             "map already; give --instructions without --save_combined")
    if refinement_model and not args.instructions:
        raise UserInputError(f"{folder} is a refinement model (CoWTalk): give --instructions, not --prompts")
    if args.instructions:
        cases = list_input_cases(args.i, predictor.dataset_json["file_ending"], predictor.num_input_channels)
        mine = dict(list(cases.items())[args.part_id::args.num_parts])
        manifest = refine_folder(predictor, mine, args.o, spec, args.iterations, args.max_rounds,
                                 args.edit_scope)
    else:
        options = FolderOptions(args.save_probabilities, args.continue_prediction, args.npp, args.nps, args.part_id,
                                args.num_parts, args.save_overlays, args.cache, args.text_device, args.save_combined)
        understanding = Understanding(
            args.on_unknown, DEFAULT_MIN_SIMILARITY if args.min_similarity is None else args.min_similarity,
            DEFAULT_MIN_MARGIN if args.min_margin is None else args.min_margin, args.wording)
        manifest = predict_folder(predictor, args.i, args.o, spec, options, understanding)
    print(json.dumps({"output": args.o, "cases": len(manifest["cases"])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
