"""``nnUNetv2_text_convert_mni152``: a small real-anatomy nnU-Net dataset from the MNI152 template.

The nilearn wheel ships the ICBM 2009a symmetric template (1 mm, 197x233x189) with grey- and white-matter
probability maps, so real brain anatomy is available offline. Each subject is the template under a random
global affine plus a smooth random displacement field, with a bias field, gamma change and noise, resampled
to the requested isotropic spacing. Labels: 1 left grey matter, 2 right grey matter, 3 left white matter,
4 right white matter (tissue = probability >= 0.5 and larger than the other tissue).

Laterality: the template is RAS+ with the midline at world x = 0, and in RAS+ x grows toward the subject's
RIGHT, so a point with x_RAS > 0 is on the subject's right. SimpleITK works in LPS (x_LPS = -x_RAS), so there
right means x_LPS < 0. Side is decided at the template point a voxel was sampled from (anatomical side).
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from nnunetv2_text.errors import UserInputError, user_errors_to_exit
from nnunetv2_text.utils.io import TMP_MARKER, atomic_folder, atomic_write_json
from nnunetv2_text.utils.orientation import DEFAULT_CANONICAL_READER, READER_KEY

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
DATASET_NAME = "MNI152"
LABELS = {"background": 0, "left_grey_matter": 1, "right_grey_matter": 2, "left_white_matter": 3,
          "right_white_matter": 4}
_FILES = {"t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
          "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
          "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"}


def template_files() -> dict:
    """Paths of the T1, GM and WM maps inside the installed nilearn package (never downloaded)."""
    import nilearn

    folder = Path(nilearn.__file__).parent / "datasets" / "data"
    paths = {k: folder / v for k, v in _FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise UserInputError(f"MNI152 template files missing from the nilearn install: {missing}")
    return paths


@functools.lru_cache(maxsize=1)
def load_template() -> Tuple[sitk.Image, np.ndarray, np.ndarray, np.ndarray]:
    """(T1 image for its geometry, T1, GM, WM arrays in (z, y, x) order scaled to [0, 1])."""
    files = template_files()
    t1 = sitk.ReadImage(str(files["t1"]))
    arrays = [sitk.GetArrayFromImage(sitk.ReadImage(str(files[k]))).astype(np.float32) / 255.0
              for k in ("t1", "gm", "wm")]
    return (t1, *arrays)


def _smooth_field(rng: np.random.Generator, shape: Tuple[int, ...], n_ctrl: int = 5) -> np.ndarray:
    """Unit-std random field, smooth at the scale of shape / n_ctrl (cubic upsampling of a coarse grid)."""
    coarse = rng.standard_normal((n_ctrl,) * len(shape))
    # cubic zoom is linear and separable: apply it per axis as a (n_out x n_ctrl) matrix (much faster)
    eye = np.eye(n_ctrl)
    mats = [np.stack([ndimage.zoom(eye[i], n / n_ctrl, order=3, mode="nearest") for i in range(n_ctrl)], 1)
            for n in shape]
    field = np.einsum("abc,ia,jb,kc->ijk", coarse, *mats, optimize=True)
    assert field.shape == tuple(shape), (field.shape, shape)
    return field / max(float(field.std()), 1e-6)


def _index_to_world(img: sitk.Image) -> Tuple[np.ndarray, np.ndarray]:
    """(M, o) with world_LPS = M @ index_xyz + o."""
    d = np.array(img.GetDirection()).reshape(3, 3)
    return d @ np.diag(img.GetSpacing()), np.array(img.GetOrigin())


def make_subject(rng: np.random.Generator, spacing: float) -> Tuple[sitk.Image, sitk.Image]:
    """One deformed, intensity-varied subject: (float32 T1 image, uint8 label image), same geometry."""
    tpl, t1, gm, wm = load_template()
    m_t, o_t = _index_to_world(tpl)
    size_in = np.array(tpl.GetSize())
    size = tuple(int(n) for n in np.floor((size_in - 1) * np.array(tpl.GetSpacing()) / spacing) + 1)  # x, y, z
    out = sitk.Image(size, sitk.sitkFloat32)
    out.SetSpacing((spacing,) * 3)
    out.SetOrigin(tpl.GetOrigin())
    out.SetDirection(tpl.GetDirection())
    m_o, o_o = _index_to_world(out)

    shape_zyx = size[::-1]
    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in size], indexing="ij"), 0).reshape(3, -1)
    world = m_o @ idx + o_o[:, None]  # LPS, columns in x-fastest-last (x, y, z) index order
    center = m_t @ ((size_in - 1) / 2.0) + o_t
    angles = np.deg2rad(rng.uniform(-6, 6, 3))
    rot = np.eye(3)
    for ax, a in enumerate(angles):
        c, s = np.cos(a), np.sin(a)
        r = np.eye(3)
        i, j = [k for k in range(3) if k != ax]
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        rot = rot @ r
    affine = rot @ np.diag(rng.uniform(0.92, 1.08, 3))
    amplitude = rng.uniform(2.0, 4.0)  # mm, std of each displacement component
    disp = np.stack([_smooth_field(rng, size).reshape(-1) * amplitude for _ in range(3)], 0)
    source = affine @ (world - center[:, None]) + center[:, None] + disp
    src_idx = np.linalg.solve(m_t, source - o_t[:, None])  # template index (x, y, z)
    coords = src_idx[::-1].reshape((3,) + tuple(size))  # (z, y, x) coordinates, grid in (x, y, z) order

    def sample(arr: np.ndarray) -> np.ndarray:
        return ndimage.map_coordinates(arr, coords, order=1, mode="constant", cval=0.0).transpose(2, 1, 0)

    t1_s, gm_s, wm_s = sample(t1), sample(gm), sample(wm)
    right = (-source[0]).reshape(size).transpose(2, 1, 0) > 0  # x_RAS > 0 -> subject's right
    grey = (gm_s >= 0.5) & (gm_s >= wm_s)
    white = (wm_s >= 0.5) & (wm_s > gm_s) & ~grey
    labels = np.zeros(shape_zyx, np.uint8)
    labels[grey] = np.where(right[grey], 2, 1)
    labels[white] = np.where(right[white], 4, 3)

    bias = np.exp(rng.uniform(0.05, 0.25) * _smooth_field(rng, shape_zyx, 4))
    img = np.clip(t1_s * bias, 0, None) ** np.exp(rng.uniform(-0.3, 0.3))
    img = img + rng.normal(0.0, rng.uniform(0.01, 0.04), img.shape)
    img = (img * rng.uniform(800, 1200)).astype(np.float32)

    image = sitk.GetImageFromArray(img)
    image.CopyInformation(out)
    label = sitk.GetImageFromArray(labels)
    label.CopyInformation(out)
    return image, label


def _check_target(out_root: Path, dataset_id: int, overwrite: bool) -> Path:
    final = out_root / f"Dataset{dataset_id:03d}_{DATASET_NAME}"
    others = [p for p in out_root.glob(f"Dataset{dataset_id:03d}_*") if p != final and TMP_MARKER not in p.name]
    if others:
        raise UserInputError(f"dataset id {dataset_id} is already used by {others[0]}")
    if final.exists() and not overwrite:
        raise UserInputError(f"{final} exists (use --overwrite to replace it)")
    return final


def build_mni152_dataset(out_root: PathLike, dataset_id: int, n_subjects: int = 20, n_test: int = 5,
                         spacing: float = 2.0, seed: int = 0, overwrite: bool = False) -> Path:
    """Write ``<out_root>/DatasetXXX_MNI152`` (imagesTr/labelsTr/imagesTs/labelsTs, dataset.json).

    Built in a temporary folder and renamed at the end, so an interrupted run leaves no partial dataset.
    """
    if not 1 <= dataset_id <= 999 or n_subjects < 1 or n_test < 0 or spacing <= 0:
        raise UserInputError("need 1 <= dataset_id <= 999, n_subjects >= 1, n_test >= 0, spacing > 0")
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    final = _check_target(out_root, dataset_id, overwrite)
    with atomic_folder(final) as tmp:
        rng = np.random.default_rng(seed)
        for i in range(n_subjects + n_test):
            split = "Tr" if i < n_subjects else "Ts"
            case = f"{DATASET_NAME}_{i:03d}"
            image, label = make_subject(rng, spacing)
            for sub, name, img in ((f"images{split}", f"{case}_0000.nii.gz", image),
                                   (f"labels{split}", f"{case}.nii.gz", label)):
                (tmp / sub).mkdir(exist_ok=True)
                sitk.WriteImage(img, str(tmp / sub / name), True)
            logger.info("%s: %s written (%s)", final.name, case, split)
        atomic_write_json(tmp / "dataset.json", {
            "channel_names": {"0": "T1"},
            "labels": LABELS,
            "numTraining": n_subjects,
            "file_ending": ".nii.gz",
            READER_KEY: DEFAULT_CANONICAL_READER,
            "vocabulary": "mni152",
            "name": DATASET_NAME,
            "description": "Deformed, intensity-varied copies of the MNI152 2009a symmetric template (nilearn).",
            "mni152": {"spacing_mm": spacing, "seed": seed, "n_test": n_test, "source": sorted(_FILES.values()),
                       "laterality": "side at template world x: x_RAS > 0 is the subject's right"},
        })
    return final


@user_errors_to_exit("nnUNetv2_text_convert_mni152")
def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="nnUNetv2_text_convert_mni152", description=__doc__.splitlines()[0])
    p.add_argument("-d", "--dataset_id", type=int, required=True)
    p.add_argument("-n", "--num_subjects", type=int, default=20, help="training subjects (default 20)")
    p.add_argument("--test", type=int, default=5, help="test subjects in imagesTs/labelsTs (default 5)")
    p.add_argument("--spacing", type=float, default=2.0, help="isotropic spacing in mm (default 2.0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--out_root", default=os.environ.get("nnUNet_raw"), help="default: $nnUNet_raw")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if not args.out_root:
        p.error("no output folder: pass -o or set nnUNet_raw")
    out = build_mni152_dataset(args.out_root, args.dataset_id, args.num_subjects, args.test, args.spacing,
                               args.seed, args.overwrite)
    print(f"dataset written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
