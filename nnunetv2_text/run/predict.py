"""``nnUNetv2_text_predict``: nnUNetv2_predict's flags, plus ``--prompts FILE``.

Writes ``<case>_<prompt slug><ending>`` (one binary mask per prompt, in the input's geometry) and
``manifest.json`` into the output folder. See docs/PREDICTION.md.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-i", required=True, help="input folder (nnU-Net naming: CASE_0000.nii.gz, ...)")
    p.add_argument("-o", required=True, help="output folder")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompts", help="prompt file: one prompt per line, or JSON "
                                        '{"prompts": [...], "cases": {"CASE": [...]}}')
    what.add_argument("--instructions", help="refinement models (CoWTalk): instruction file, plain text or JSON "
                                             '{"cases": {"CASE": "text" | ["chunk 1", "chunk 2"]}, "default": ...}')
    p.add_argument("--iterations", type=int, default=1,
                   help="refinement: repeat a single instruction this many times (each output fed back)")
    p.add_argument("-d", required=True, help="dataset id or name")
    p.add_argument("-c", required=True, help="configuration, e.g. 3d_fullres")
    p.add_argument("-f", nargs="+", default=["0", "1", "2", "3", "4"], help="folds (default: 0 1 2 3 4)")
    p.add_argument("-tr", default="TextFusionTrainer", help="trainer (default: TextFusionTrainer)")
    p.add_argument("-p", default="nnUNetResEncUNetMPlans", help="plans identifier (default: nnUNetResEncUNetMPlans)")
    p.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint name (default: checkpoint_final.pth)")
    p.add_argument("--step_size", type=float, default=0.5, help="sliding-window step as a fraction of the patch")
    p.add_argument("--disable_tta", action="store_true", help="no mirroring (left-right is never mirrored anyway)")
    p.add_argument("-npp", type=int, default=3, help="preprocessing processes")
    p.add_argument("-nps", type=int, default=3, help="export processes")
    p.add_argument("-device", default="cuda", help="cuda, cpu or mps")
    p.add_argument("--part_id", type=int, default=0, help="this job's part (0-based) when splitting cases")
    p.add_argument("--num_parts", type=int, default=1, help="number of parts the cases are split into")
    p.add_argument("--continue_prediction", action="store_true", help="skip cases already finished")
    p.add_argument("--save_probabilities", action="store_true", help="also write <case>_<slug>.npz probabilities")
    p.add_argument("--prompt_batch_size", type=int, default=16, help="prompts decoded together per tile")
    p.add_argument("--cache", default=None, help="embedding cache (default: the model folder's text/ cache)")
    p.add_argument("--text_device", default="cpu", help="device for encoding prompts missing from the cache")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import torch
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    from nnunetv2_text.inference.folder import InputError, predict_folder
    from nnunetv2_text.inference.predictor import TextPredictor
    from nnunetv2_text.inference.prompt_file import PromptFileError, read_prompt_file
    from nnunetv2_text.text.cache import EmbeddingCacheError
    from nnunetv2_text.training import ensure_ext_trainer_env

    ensure_ext_trainer_env()
    try:
        if args.instructions:
            from nnunetv2_text.inference.refine import read_instruction_file
            spec = read_instruction_file(args.instructions)
        else:
            spec = read_prompt_file(args.prompts)  # before loading anything heavy
        device = torch.device(args.device)
        if device.type == "cpu":
            torch.set_num_threads(max(1, torch.get_num_threads()))
        predictor = TextPredictor(tile_step_size=args.step_size, use_mirroring=not args.disable_tta,
                                  perform_everything_on_device=device.type == "cuda", device=device,
                                  prompt_batch_size=args.prompt_batch_size)
        folds = [f if f == "all" else int(f) for f in args.f]
        predictor.initialize_from_trained_model_folder(get_output_folder(args.d, args.tr, args.p, args.c), folds,
                                                       args.chk)
        if args.instructions:
            from nnunetv2_text.inference.folder import list_input_cases
            from nnunetv2_text.inference.refine import refine_folder
            cases = list_input_cases(args.i, predictor.dataset_json["file_ending"], predictor.num_input_channels)
            mine = dict(list(cases.items())[args.part_id::args.num_parts])
            manifest = refine_folder(predictor, mine, args.o, spec, args.iterations)
        else:
            manifest = predict_folder(predictor, args.i, args.o, spec, args.save_probabilities,
                                      args.continue_prediction, args.npp, args.nps, args.part_id, args.num_parts,
                                      args.cache, args.text_device)
    except (PromptFileError, InputError, EmbeddingCacheError, FileNotFoundError, ValueError) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"output": args.o, "cases": len(manifest["cases"])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
