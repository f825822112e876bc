"""``nnUNetv2_text_convert_mni152``: a small real-anatomy nnU-Net dataset from the MNI152 template.

Subjects come from :mod:`dataset_conversion.brain_subjects` (the template under a random affine and smooth
deformation, with a bias field, gamma change and noise). Labels: 1 left grey matter, 2 right grey matter,
3 left white matter, 4 right white matter (tissue = probability >= 0.5 and larger than the other tissue),
the side taken at the template point each voxel was sampled from.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import List, Optional, Union

import numpy as np

from dataset_conversion.brain_subjects import (TEMPLATE_FILES, Warp, load_template, parse_subject_args,
                                              subject_dataset_json, subject_parser, write_subjects)
from nnunetv2_text.errors import user_errors_to_exit

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
DATASET_NAME = "MNI152"
LABELS = {"background": 0, "left_grey_matter": 1, "right_grey_matter": 2, "left_white_matter": 3,
          "right_white_matter": 4}


def tissue_labels(warp: Warp) -> np.ndarray:
    """(z, y, x) uint8 labels: grey / white matter at the subject's points, split by anatomical side."""
    tpl, _, gm, wm = load_template()
    gm_s, wm_s = warp.sample(tpl, gm, order=1), warp.sample(tpl, wm, order=1)
    right = warp.subject_right()
    grey = (gm_s >= 0.5) & (gm_s >= wm_s)
    white = (wm_s >= 0.5) & (wm_s > gm_s) & ~grey
    labels = np.zeros(gm_s.shape, np.uint8)
    labels[grey] = np.where(right[grey], 2, 1)
    labels[white] = np.where(right[white], 4, 3)
    return labels


def build_mni152_dataset(out_root: PathLike, dataset_id: int, n_subjects: int = 20, n_test: int = 5,
                         spacing: float = 2.0, seed: int = 0, overwrite: bool = False) -> Path:
    """Write ``<out_root>/DatasetXXX_MNI152`` (imagesTr/labelsTr/imagesTs/labelsTs, dataset.json).

    Built in a temporary folder and renamed at the end, so an interrupted run leaves no partial dataset.
    """
    dataset_json = {
        **subject_dataset_json(LABELS, n_subjects),
        "vocabulary": "mni152",
        "name": DATASET_NAME,
        "description": "Deformed, intensity-varied copies of the MNI152 2009a symmetric template (nilearn).",
        "mni152": {"spacing_mm": spacing, "seed": seed, "n_test": n_test, "source": sorted(TEMPLATE_FILES.values()),
                   "laterality": "side at template world x: x_RAS > 0 is the subject's right"},
    }
    return write_subjects(out_root, dataset_id, DATASET_NAME, (n_subjects, n_test), spacing, seed, tissue_labels,
                          dataset_json, overwrite)


@user_errors_to_exit("nnUNetv2_text_convert_mni152")
def main(argv: Optional[List[str]] = None) -> int:
    args = parse_subject_args(subject_parser("nnUNetv2_text_convert_mni152", __doc__.splitlines()[0]), argv)
    out = build_mni152_dataset(args.out_root, args.dataset_id, args.num_subjects, args.test, args.spacing,
                               args.seed, args.overwrite)
    print(f"dataset written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
