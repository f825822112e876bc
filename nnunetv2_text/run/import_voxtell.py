"""``nnUNetv2_text_import_voxtell``: a released VoxTell model as an nnU-Net results folder of this plugin.

    nnUNetv2_text_import_voxtell -i VOXTELL_MODEL_FOLDER -d 900 [--name VoxTell] [--embedding_bank bank.npz]
    nnUNetv2_text_predict -i imgs -o out --prompts prompts.txt -d 900 -tr TextFusionTrainer_VoxTell -f 0

The folder is VoxTell's own (``plans.json`` + ``fold_0/checkpoint_final.pth``, e.g. ``voxtell_v1.1`` from
Hugging Face ``mrokuss/VoxTell``); its weights are CC-BY-NC-SA 4.0. Every tensor is checked against this
plugin's VoxTell-configured network before anything is written.
"""
from __future__ import annotations

import argparse
import logging
import sys

from nnunetv2_text.run.cli import user_errors_to_exit


@user_errors_to_exit("nnUNetv2_text_import_voxtell")
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="nnUNetv2_text_import_voxtell", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-i", required=True, help="VoxTell model folder (plans.json, fold_0/checkpoint_final.pth)")
    p.add_argument("-d", required=True, type=int, help="dataset id to file the model under in nnUNet_results")
    p.add_argument("--name", default="VoxTell", help="dataset name (DatasetXXX_NAME)")
    p.add_argument("--embedding_bank", default=None,
                   help="VoxTell's embedding bank (.npz with labels and embeddings) to seed the prompt cache")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier import of the same id")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from nnunetv2.paths import nnUNet_results

    from nnunetv2_text.errors import UserInputError
    from nnunetv2_text.interop.voxtell import import_voxtell

    if not nnUNet_results:
        raise UserInputError("nnUNet_results is not set: nnU-Net needs it to find the imported model")
    folder = import_voxtell(args.i, nnUNet_results, args.d, args.name, args.embedding_bank, args.overwrite)
    print(f"imported {args.i} -> {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
