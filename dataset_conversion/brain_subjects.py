"""Synthetic subjects made from the MNI152 template: the deformation and intensity model that the MNI152
and brain-atlas conversions share.

The nilearn wheel ships the ICBM 2009a symmetric template (1 mm, 197x233x189) with grey- and white-matter
probability maps, so real brain anatomy is available offline. A subject is the template under a random
global affine plus a smooth random displacement field, resampled to an isotropic spacing, with a bias
field, a gamma change and noise. Each output voxel remembers the template world point it was sampled from
(:attr:`Warp.source`), so any map in MNI world space (tissue probabilities, an atlas parcellation) gives
the subject's labels at the same points.

Laterality: the template is RAS+ with the midline at world x = 0, and in RAS+ x grows toward the subject's
RIGHT, so a point with x_RAS > 0 is on the subject's right. SimpleITK works in LPS (x_LPS = -x_RAS), so
there right means x_LPS < 0. Side is decided at the template point a voxel was sampled from (anatomical
side), never by the voxel's own position in the deformed subject.
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from nnunetv2_text.errors import UserInputError
from nnunetv2_text.utils.io import atomic_dataset_folder, atomic_write_json
from nnunetv2_text.utils.orientation import DEFAULT_CANONICAL_READER, READER_KEY

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
TEMPLATE_FILES = {"t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
                  "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
                  "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"}


def template_files() -> Dict[str, Path]:
    """Paths of the T1, GM and WM maps inside the installed nilearn package (never downloaded)."""
    import nilearn

    folder = Path(nilearn.__file__).parent / "datasets" / "data"
    paths = {k: folder / v for k, v in TEMPLATE_FILES.items()}
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


def index_to_world(img: sitk.Image) -> Tuple[np.ndarray, np.ndarray]:
    """(M, o) with world_LPS = M @ index_xyz + o."""
    d = np.array(img.GetDirection()).reshape(3, 3)
    return d @ np.diag(img.GetSpacing()), np.array(img.GetOrigin())


@dataclass
class Warp:
    """One subject's sampling: ``grid`` is its (empty) image geometry, ``source`` the template world point
    (LPS, shape (3, N)) each of its voxels was sampled from, voxels in x-fastest-last (x, y, z) order."""

    grid: sitk.Image
    source: np.ndarray

    @property
    def size(self) -> Tuple[int, int, int]:
        return tuple(self.grid.GetSize())

    def sample(self, geometry: sitk.Image, array_zyx: np.ndarray, order: int) -> np.ndarray:
        """``array_zyx`` (on ``geometry``'s grid) at the subject's source points, as a (z, y, x) array.
        ``order`` 1 for intensities and probabilities, 0 (nearest neighbour) for label ids."""
        m, o = index_to_world(geometry)
        idx = np.linalg.solve(m, self.source - o[:, None])  # (x, y, z) index in ``geometry``
        coords = idx[::-1].reshape((3,) + self.size)  # (z, y, x) coordinates, grid in (x, y, z) order
        return ndimage.map_coordinates(array_zyx, coords, order=order, mode="constant",
                                       cval=0.0).transpose(2, 1, 0)

    def subject_right(self) -> np.ndarray:
        """(z, y, x) bool: the voxel was sampled from the template's right half (x_RAS > 0)."""
        return (-self.source[0]).reshape(self.size).transpose(2, 1, 0) > 0


def _rotation(angles: np.ndarray) -> np.ndarray:
    rot = np.eye(3)
    for ax, a in enumerate(angles):
        c, s = np.cos(a), np.sin(a)
        r = np.eye(3)
        i, j = [k for k in range(3) if k != ax]
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        rot = rot @ r
    return rot


def random_warp(rng: np.random.Generator, spacing: float) -> Warp:
    """A random global affine (rotation within 6 degrees, scaling within 8 %) plus a smooth displacement
    field (2-4 mm std), on a grid of ``spacing`` mm spanning the template's field of view."""
    tpl = load_template()[0]
    m_t, o_t = index_to_world(tpl)
    size_in = np.array(tpl.GetSize())
    size = tuple(int(n) for n in np.floor((size_in - 1) * np.array(tpl.GetSpacing()) / spacing) + 1)  # x, y, z
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing((spacing,) * 3)
    grid.SetOrigin(tpl.GetOrigin())
    grid.SetDirection(tpl.GetDirection())
    m_o, o_o = index_to_world(grid)
    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in size], indexing="ij"), 0).reshape(3, -1)
    world = m_o @ idx + o_o[:, None]
    center = m_t @ ((size_in - 1) / 2.0) + o_t
    rot = _rotation(np.deg2rad(rng.uniform(-6, 6, 3)))
    affine = rot @ np.diag(rng.uniform(0.92, 1.08, 3))
    amplitude = rng.uniform(2.0, 4.0)  # mm, std of each displacement component
    disp = np.stack([_smooth_field(rng, size).reshape(-1) * amplitude for _ in range(3)], 0)
    return Warp(grid, affine @ (world - center[:, None]) + center[:, None] + disp)


def synthetic_t1(rng: np.random.Generator, warp: Warp) -> sitk.Image:
    """The template T1 at the subject's points with a bias field, gamma change, noise and global scale."""
    tpl, t1 = load_template()[:2]
    t1_s = warp.sample(tpl, t1, order=1)
    bias = np.exp(rng.uniform(0.05, 0.25) * _smooth_field(rng, t1_s.shape, 4))
    img = np.clip(t1_s * bias, 0, None) ** np.exp(rng.uniform(-0.3, 0.3))
    img = img + rng.normal(0.0, rng.uniform(0.01, 0.04), img.shape)
    img = (img * rng.uniform(800, 1200)).astype(np.float32)
    image = sitk.GetImageFromArray(img)
    image.CopyInformation(warp.grid)
    return image


def subject_dataset_json(labels: Dict[str, int], n_subjects: int) -> dict:
    """The dataset.json entries every brain-subject dataset shares: one T1 channel, NIfTI files, read in
    patient orientation (left and right are the patient's however a scan is stored)."""
    return {"channel_names": {"0": "T1"}, "labels": labels, "numTraining": n_subjects, "file_ending": ".nii.gz",
            READER_KEY: DEFAULT_CANONICAL_READER}


def check_subject_options(dataset_id: int, n_subjects: int, n_test: int, spacing: float) -> None:
    """Refuse impossible options before anything is written, naming the value at fault."""
    if not 1 <= dataset_id <= 999:
        raise UserInputError(f"-d (dataset_id) {dataset_id}: must be between 1 and 999")
    if n_subjects < 1:
        raise UserInputError(f"-n {n_subjects}: need at least 1 training subject")
    if n_test < 0:
        raise UserInputError(f"--test {n_test}: the number of test subjects cannot be negative")
    if not spacing > 0:
        raise UserInputError(f"--spacing {spacing}: the spacing must be above 0 mm")


def write_subjects(out_root: PathLike, dataset_id: int, name: str, counts: Tuple[int, int], spacing: float,
                   seed: int, make_labels: Callable[[Warp], np.ndarray], dataset_json: dict,
                   overwrite: bool = False) -> Path:
    """Write ``<out_root>/DatasetXXX_<name>``: ``counts`` = (training, test) subjects in imagesTr/labelsTr and
    imagesTs/labelsTs, labels from ``make_labels(warp)`` ((z, y, x) uint8), then ``dataset_json``.

    Built in a hidden folder and moved into place at the end, so an interrupted run leaves no partial dataset.
    Random draws per subject: the warp, then the intensity model (``make_labels`` draws nothing)."""
    n_subjects, n_test = counts
    check_subject_options(dataset_id, n_subjects, n_test, spacing)
    final = Path(out_root) / f"Dataset{dataset_id:03d}_{name}"
    with atomic_dataset_folder(out_root, dataset_id, name, overwrite) as tmp:
        rng = np.random.default_rng(seed)
        for i in range(n_subjects + n_test):
            split = "Tr" if i < n_subjects else "Ts"
            case = f"{name}_{i:03d}"
            warp = random_warp(rng, spacing)
            label = sitk.GetImageFromArray(make_labels(warp))
            label.CopyInformation(warp.grid)
            image = synthetic_t1(rng, warp)
            for sub, fname, img in ((f"images{split}", f"{case}_0000.nii.gz", image),
                                    (f"labels{split}", f"{case}.nii.gz", label)):
                (tmp / sub).mkdir(exist_ok=True)
                sitk.WriteImage(img, str(tmp / sub / fname), True)
            logger.info("%s: %s written (%s)", final.name, case, split)
        atomic_write_json(tmp / "dataset.json", dataset_json)
    return final


def subject_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The options every brain-subject conversion takes (-d, -n, --test, --spacing, --seed, -o, --overwrite)."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("-d", "--dataset_id", type=int, required=True)
    p.add_argument("-n", "--num_subjects", type=int, default=20, help="training subjects (default 20)")
    p.add_argument("--test", type=int, default=5, help="test subjects in imagesTs/labelsTs (default 5)")
    p.add_argument("--spacing", type=float, default=2.0, help="isotropic spacing in mm (default 2.0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--out_root", default=os.environ.get("nnUNet_raw"), help="default: $nnUNet_raw")
    p.add_argument("--overwrite", action="store_true")
    return p


def parse_subject_args(p: argparse.ArgumentParser, argv: Optional[List[str]]) -> argparse.Namespace:
    """Parsed options, logging set up, and an output folder required."""
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if not args.out_root:
        p.error("no output folder: pass -o or set nnUNet_raw")
    return args
