"""``nnUNetv2_text_embed``: build or update a dataset's embedding cache from its vocabulary.

Run after ``nnUNetv2_plan_and_preprocess`` (or at least after the dataset folder exists) and before
training. Only texts missing from the cache are encoded, so rerunning is cheap.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from nnunetv2_text.errors import UserInputError
from nnunetv2_text.run.cli import user_errors_to_exit


def _dataset_folders(dataset: str):
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    try:
        name = maybe_convert_to_dataset_name(dataset)
    except RuntimeError as e:  # nnU-Net's "could not find a dataset with the ID ..."
        raise UserInputError(str(e)) from None
    return Path(nnUNet_raw) / name, Path(nnUNet_preprocessed) / name


def read_text_lines_or_json(path: str) -> list:
    """Extra texts: a JSON list / {"prompts": [...]} or one text per line."""
    try:
        raw = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserInputError(f"{path}: cannot read the --extra file ({e})") from None
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError:
        return [line.strip() for line in raw.splitlines() if line.strip()]
    if isinstance(obj, dict):
        obj = obj.get("prompts", [])
    return [str(x) for x in obj]


@user_errors_to_exit("nnUNetv2_text_embed")
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="nnUNetv2_text_embed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", "--dataset", required=True, help="dataset id or name (e.g. 501 or Dataset501_Toy)")
    p.add_argument("--vocab", default=None, help="vocabulary file or shipped name (default: see vocab/README.md)")
    p.add_argument("--model", default="default",
                   help="sentence-transformers model: 'default' (bundled all-MiniLM-L6-v2), a local path or "
                        "a Hugging Face name available offline (e.g. Qwen/Qwen3-Embedding-0.6B)")
    p.add_argument("--instruction", default=None,
                   help="instruction prefix (default: VoxTell's for instruction models, none otherwise)")
    p.add_argument("--extra", default=None, help="file of extra texts to cache (prompt file or instructions)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from nnunetv2_text.text.dataset_text import prepare_dataset_text
    from nnunetv2_text.text.encoder import TextEncoder

    raw, pre = _dataset_folders(args.dataset)
    extra = read_text_lines_or_json(args.extra) if args.extra else []
    encoder = TextEncoder(args.model, args.instruction, args.device, args.batch_size)
    summary = prepare_dataset_text(raw, pre, encoder, vocab=args.vocab, extra_texts=extra)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
