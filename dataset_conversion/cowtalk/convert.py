"""``nnUNetv2_text_convert_cowtalk``: a TopCoW release -> an nnU-Net raw dataset of CoWTalk variants.

Each subject yields ``--variants`` cases ``<subject>_v<kk>``: input channels are the image (unless
``--no-image``) and 13 binary shape channels holding an erroneous segmentation; the target is the
ground truth (TopCoW 15 stored as 13); ``instructions{Tr,Ts}/<case>.json`` say what is wrong and how to
fix it. All inputs are validated first, the dataset is written into a hidden temporary folder beside the
output and renamed into place only when complete. See docs/COWTALK.md.
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import re
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from nnunetv2_text.errors import user_errors_to_exit
from nnunetv2_text.text.vocabulary import resolve_vocabulary_path
from nnunetv2_text.utils.io import atomic_write_json, existing_datasets
from nnunetv2_text.utils.orientation import DEFAULT_CANONICAL_READER, READER_KEY

from .centerline import Geometry
from .constants import (TOPCOW_TO_CONTIGUOUS, CONTIGUOUS_TO_TOPCOW, DATASET_LABELS, NUM_SHAPE_CHANNELS, SHAPE_CHANNEL_ORDER,
                        shape_channels, to_contiguous)
from .inputs import ConversionError, Subject, apply_split, find_subjects, reference_geometry, validate_subjects
from .instructions import make_record
from .sampling import sample_variant, variant_seed

logger = logging.getLogger(__name__)

VOCABULARY = "topcow"
FILE_ENDING = ".nii.gz"


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard link (15 variants share one image on disk); copy where the file system has no links."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _write(arr: np.ndarray, ref: sitk.Image, path: Path) -> None:
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(ref)
    sitk.WriteImage(img, str(path), True)


def _convert_subject(job: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Write all variants of one subject into the temporary dataset folder; return their records."""
    s: Subject = job["subject"]
    out: Path = job["out"]
    suffix = "Tr" if s.split == "train" else "Ts"
    images, labels, instr = out / f"images{suffix}", out / f"labels{suffix}", out / f"instructions{suffix}"
    cache = out / ".cache" / s.subject_id
    cache.mkdir(parents=True)
    geo = reference_geometry(s)
    ref = sitk.ReadImage(str(s.label))
    ref.SetSpacing(geo["spacing"])
    ref.SetOrigin(geo["origin"])
    ref.SetDirection(geo["direction"])
    label_map = sitk.GetArrayFromImage(ref).astype(np.uint8)
    geometry = Geometry(tuple(geo["spacing"]), tuple(geo["origin"]), tuple(geo["direction"]))
    _write(to_contiguous(label_map), ref, cache / "target.nii.gz")
    gt = shape_channels(label_map)
    for k in range(NUM_SHAPE_CHANNELS):
        _write(gt[k], ref, cache / f"gt_{k:02d}.nii.gz")
    if not job["no_image"]:
        shutil.copyfile(s.image, cache / "image.nii.gz")
    first = 0 if job["no_image"] else 1
    records = []
    for v in range(job["variants"]):
        case_id = f"{s.subject_id}_v{v:02d}"
        seed = variant_seed(job["seed"], s.subject_id, v)
        errors, masks = sample_variant(label_map, geometry, np.random.default_rng(seed))
        if not job["no_image"]:
            _link_or_copy(cache / "image.nii.gz", images / f"{case_id}_0000{FILE_ENDING}")
        for k, topcow_id in enumerate(SHAPE_CHANNEL_ORDER):
            dst = images / f"{case_id}_{first + k:04d}{FILE_ENDING}"
            if topcow_id in masks:
                _write(masks[topcow_id].astype(np.uint8), ref, dst)
            else:
                _link_or_copy(cache / f"gt_{k:02d}.nii.gz", dst)
        _link_or_copy(cache / "target.nii.gz", labels / f"{case_id}{FILE_ENDING}")
        record = make_record(case_id, s.subject_id, s.modality, v, seed, errors, np.random.default_rng([seed, 1]))
        atomic_write_json(instr / f"{case_id}.json", record)
        records.append(dict(record, split=s.split))
    shutil.rmtree(cache)
    logger.info("%s: %d variants written (%s)", s.subject_id, job["variants"], s.split)
    return records


def contiguous_vocabulary() -> Dict[str, Any]:
    """The shipped TopCoW vocabulary with this dataset's contiguous label ids (15 -> 13); it is found by
    ``nnUNetv2_text_embed`` as ``vocabulary.json`` beside dataset.json."""
    vocab = json.loads(resolve_vocabulary_path(VOCABULARY).read_text(encoding="utf-8"))
    for c in vocab["concepts"]:
        c["labels"] = [TOPCOW_TO_CONTIGUOUS.get(int(v), int(v)) for v in c["labels"]]
    vocab["name"] = "TopCoW (CoWTalk contiguous ids)"
    return vocab


def _dataset_json(name: str, subjects: Sequence[Subject], n_train: int, modality: str, no_image: bool,
                  variants: int, seed: int) -> Dict[str, Any]:
    modalities = sorted({s.modality for s in subjects})
    first = 0 if no_image else 1
    channel_names = {} if no_image else {"0": "CT" if modalities == ["ct"] else "zscore"}
    channel_names.update({str(first + k): "noNorm" for k in range(NUM_SHAPE_CHANNELS)})
    return {
        "name": name,
        "description": "CoWTalk: erroneous Circle-of-Willis segmentations with corrective instructions (from TopCoW)",
        "channel_names": channel_names,
        "labels": dict(DATASET_LABELS),
        "numTraining": n_train,
        "file_ending": FILE_ENDING,
        READER_KEY: DEFAULT_CANONICAL_READER,
        "cowtalk": {
            "shape_channels": {str(first + k): t for k, t in enumerate(SHAPE_CHANNEL_ORDER)},
            "label_mapping": {str(k): v for k, v in CONTIGUOUS_TO_TOPCOW.items()},
            "image_channel": None if no_image else 0,
            "modality": modality,
            "modalities": modalities,
            "no_image": no_image,
            "variants": variants,
            "seed": seed,
            "instructions": {"train": "instructionsTr", "test": "instructionsTs"},
            "viewing_direction": "posterior",
        },
    }


def convert(topcow_folder: Path, dataset_id: int, output_root: Optional[Path] = None, name: str = "CoWTalk",
            variants: int = 15, seed: int = 0, modality: str = "both", no_image: bool = False,
            split_file: Optional[Path] = None, overwrite: bool = False, num_processes: int = 1) -> Path:
    """Convert a TopCoW folder into ``<output_root>/DatasetXXX_<name>``; returns the dataset folder."""
    if not 1 <= dataset_id <= 999:
        raise ConversionError(f"dataset id {dataset_id} is outside 1..999")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_\-]*", name):
        raise ConversionError(f"dataset name '{name}' may only contain letters, digits, '_' and '-'")
    if variants < 1 or seed < 0 or num_processes < 1:
        raise ConversionError("--variants and --num_processes must be >= 1 and --seed >= 0")
    if modality not in ("ct", "mr", "both"):
        raise ConversionError(f"--modality must be ct, mr or both, not '{modality}'")
    if output_root is None:
        if not os.environ.get("nnUNet_raw"):
            raise ConversionError("no output folder: set nnUNet_raw or pass -o OUTPUT_ROOT")
        output_root = Path(os.environ["nnUNet_raw"])
    output_root = Path(output_root)
    existing = existing_datasets(output_root, dataset_id)
    if existing and not overwrite:
        raise ConversionError(f"dataset id {dataset_id} already exists: {', '.join(str(p) for p in existing)} "
                              "(pass --overwrite to replace it)")
    subjects = apply_split(find_subjects(Path(topcow_folder), modality), split_file)
    if not any(s.split == "train" for s in subjects):
        raise ConversionError(f"{topcow_folder}: no training subject left after the split")
    validate_subjects(subjects)

    output_root.mkdir(parents=True, exist_ok=True)
    final = output_root / f"Dataset{dataset_id:03d}_{name}"
    # hidden (nnU-Net only lists folders starting with "Dataset") and created with the user's umask
    tmp = output_root / f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        for sub in ("images", "labels", "instructions"):
            for split in ("Tr",) + (("Ts",) if any(s.split == "test" for s in subjects) else ()):
                (tmp / f"{sub}{split}").mkdir()
        jobs = [{"subject": s, "out": tmp, "variants": variants, "seed": seed, "no_image": no_image}
                for s in subjects]
        records: List[Dict[str, Any]] = []
        if num_processes > 1 and len(jobs) > 1:
            with multiprocessing.get_context("spawn").Pool(min(num_processes, len(jobs))) as pool:
                for r in pool.imap(_convert_subject, jobs):
                    records.extend(r)
        else:
            for job in jobs:
                records.extend(_convert_subject(job))
        shutil.rmtree(tmp / ".cache", ignore_errors=True)
        n_train = sum(r["split"] == "train" for r in records)
        atomic_write_json(tmp / "dataset.json", _dataset_json(name, subjects, n_train, modality, no_image, variants, seed))
        atomic_write_json(tmp / "vocabulary.json", contiguous_vocabulary())
        atomic_write_json(tmp / "cowtalk_variants.json", {
            "format": "nnunetv2_text.cowtalk_variants", "version": 1, "dataset": final.name,
            "seed": seed, "variants": variants, "records": records})
        trash = []
        for old in existing_datasets(output_root, dataset_id):
            moved = Path(tempfile.mkdtemp(prefix=f".{old.name}.old-", dir=output_root))
            os.replace(old, moved / old.name)
            trash.append(moved)
        os.replace(tmp, final)
        for t in trash:
            shutil.rmtree(t, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote %s: %d training and %d test cases", final, n_train, len(records) - n_train)
    return final


@user_errors_to_exit("nnUNetv2_text_convert_cowtalk")
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_text_convert_cowtalk",
        description="Convert a TopCoW release (2024 layout) into an nnU-Net raw CoWTalk dataset: erroneous "
                    "vessel segmentations + corrective instructions. See docs/COWTALK.md.")
    parser.add_argument("-i", dest="input", required=True, type=Path, help="TopCoW folder (imagesTr/, cow_seg_labelsTr/)")
    parser.add_argument("-d", dest="dataset_id", required=True, type=int, help="nnU-Net dataset id (1..999)")
    parser.add_argument("-o", dest="output", type=Path, default=None, help="output root (default: $nnUNet_raw)")
    parser.add_argument("--name", default="CoWTalk", help="dataset name (default: CoWTalk)")
    parser.add_argument("--variants", type=int, default=15, help="erroneous variants per subject (default: 15)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--modality", choices=("ct", "mr", "both"), default="both", help="subjects to use (default: both)")
    parser.add_argument("--no-image", dest="no_image", action="store_true", help="shape channels only, no image channel")
    parser.add_argument("--split", type=Path, default=None, help='JSON {"train": [ids], "test": [ids]}')
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset with this id")
    parser.add_argument("--num_processes", type=int, default=1, help="worker processes (default: 1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    folder = convert(args.input, args.dataset_id, args.output, args.name, args.variants, args.seed,
                     args.modality, args.no_image, args.split, args.overwrite, args.num_processes)
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
