"""A toy nnU-Net dataset in which only the text says which structure to segment.

Every image holds two or three objects: a ball (label 1), a box (label 2) and a rod (label 3), each with
its own intensity (like tissues in CT). All are visible at once, so which one a prompt wants is told by
the text alone: a model that ignores the prompt cannot exceed chance, and a case without the rod makes
"rod" a negative prompt. Shape and intensity differ so a small network learns them in minutes on a CPU.
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from nnunetv2_text.utils.io import atomic_path, atomic_write_json
from nnunetv2_text.utils.orientation import DEFAULT_CANONICAL_READER, READER_KEY

LABELS = {"background": 0, "ball": 1, "box": 2, "rod": 3}
#: training cases of the demo and the tests: with 24 (19 after the validation split) the 600-step model
#: failed on unseen layouts of the same shapes
TRAIN_CASES = 48


def _object_mask(kind: str, shape, center, rng) -> np.ndarray:
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    d = [zz - center[0], yy - center[1], xx - center[2]]
    if kind == "ball":
        return (d[0] ** 2 + d[1] ** 2 + d[2] ** 2) <= rng.uniform(4.0, 5.5) ** 2
    if kind == "box":
        h = rng.uniform(3.0, 4.5)
        return (np.abs(d[0]) <= h) & (np.abs(d[1]) <= h) & (np.abs(d[2]) <= h)
    axis = int(rng.integers(3))  # rod: a cylinder along a random axis
    others = [d[i] for i in range(3) if i != axis]
    return (others[0] ** 2 + others[1] ** 2 <= 3.2 ** 2) & (np.abs(d[axis]) <= rng.uniform(6.0, 8.0))


def make_case(shape: Tuple[int, int, int], kinds: Sequence[str], rng) -> Tuple[np.ndarray, np.ndarray]:
    """(image float32, label uint8) arrays in (z, y, x) order with the given objects, not overlapping."""
    s = np.array(shape)
    slots = [np.round(s * np.array(f)).astype(int) for f in
             ((0.27, 0.27, 0.27), (0.27, 0.73, 0.73), (0.73, 0.27, 0.73), (0.73, 0.73, 0.27))]
    order = rng.permutation(len(slots))
    seg = np.zeros(shape, np.uint8)
    for kind, slot in zip(kinds, order):
        center = slots[slot] + rng.integers(-1, 2, size=3)
        seg[_object_mask(kind, shape, center, rng) & (seg == 0)] = LABELS[kind]
    # each kind has its own brightness band (a CPU-sized model learns it fast); the image shows all of
    # them at once, so which one a prompt wants is still told by the text alone. The bands are absolute
    # (the dataset's channel is "CT": nnU-Net normalises with dataset-wide statistics); under per-image
    # z-scoring the model learned a rank shortcut ("rod" = the brightest object, the box when no rod)
    brightness = np.array([0.0, 1.0, 3.0, 5.0], np.float32) * rng.uniform(0.9, 1.1)
    image = brightness[seg] + rng.normal(0, 0.15, shape).astype(np.float32)
    return image.astype(np.float32), seg


def _write(arr: np.ndarray, path: Path, spacing, direction, origin) -> None:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing([float(x) for x in spacing])
    img.SetOrigin([float(x) for x in origin])
    if direction is not None:
        img.SetDirection([float(x) for x in direction])
    with atomic_path(path) as tmp:
        sitk.WriteImage(img, tmp, True)


def case_kinds(i: int, every_object: bool = False) -> list:
    """Ball and box always; the rod in two of three cases (the others make 'rod' a negative prompt), or in
    every case with ``every_object`` (partial-label sources: there the rod a source leaves unlabelled must
    be visible in every image, so that only the label maps differ between sources)."""
    return ["ball", "box"] + (["rod"] if every_object or i % 3 != 2 else [])


def write_toy_dataset(raw_root: Path, dataset_id: int = 990, name: str = "TextToy", num_cases: int = TRAIN_CASES,
                      shape: Tuple[int, int, int] = (32, 32, 32), spacing=(1.0, 1.0, 1.0), seed: int = 0,
                      num_test: int = 0, test_spacing=None, test_direction: Optional[Sequence[float]] = None,
                      every_object: bool = False) -> Path:
    """Write ``DatasetXXX_name`` (imagesTr, labelsTr, dataset.json naming the shipped ``toy_shapes``
    vocabulary) and optionally ``imagesTs``/``labelsTs`` with their own spacing and direction."""
    rng = np.random.default_rng(seed)
    folder = Path(raw_root) / f"Dataset{dataset_id:03d}_{name}"
    for i in range(num_cases + num_test):
        test = i >= num_cases
        sub, lab = ("imagesTs", "labelsTs") if test else ("imagesTr", "labelsTr")
        image, seg = make_case(shape, case_kinds(i, every_object), rng)
        sp = (test_spacing or spacing) if test else spacing
        dr = test_direction if test else None
        case = f"toy_{i:03d}"
        origin = (float(i), -2.0, 3.5)
        _write(image, folder / sub / f"{case}_0000.nii.gz", sp, dr, origin)
        _write(seg, folder / lab / f"{case}.nii.gz", sp, dr, origin)
    atomic_write_json(folder / "dataset.json", {
        "channel_names": {"0": "CT"}, "labels": LABELS, "numTraining": num_cases,
        "file_ending": ".nii.gz", "name": name, "vocabulary": "toy_shapes", READER_KEY: DEFAULT_CANONICAL_READER,
        "description": "nnunetv2_text toy: ball, box and rod told apart only by the prompt"})
    return folder


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_partial_toy_source(raw_root: Path, dataset_id: int, name: str, annotated: Sequence[str],
                             num_cases: int = TRAIN_CASES, seed: int = 0) -> Path:
    """A toy dataset that labels only some of the objects its images show, as public datasets do.

    Every image holds the ball, the box and the rod, but only the kinds in
    ``annotated`` are labelled, numbered 1, 2, ... in that order (so two sources number the same object
    differently); the others are left as background. Its own ``vocabulary.json`` names only those kinds."""
    folder = write_toy_dataset(raw_root, dataset_id, name, num_cases=num_cases, seed=seed, every_object=True)
    values = {kind: i + 1 for i, kind in enumerate(annotated)}
    lut = np.zeros(len(LABELS), np.uint8)
    for kind, v in values.items():
        lut[LABELS[kind]] = v
    for f in sorted((folder / "labelsTr").glob("*.nii.gz")):
        img = sitk.ReadImage(str(f))
        out = sitk.GetImageFromArray(lut[sitk.GetArrayFromImage(img)])
        out.CopyInformation(img)
        with atomic_path(f) as tmp:
            sitk.WriteImage(out, tmp, True)
    ds = read_json(folder / "dataset.json")
    ds.pop("vocabulary")
    ds["labels"] = {"background": 0, **values}
    atomic_write_json(folder / "dataset.json", ds)
    shipped = json.loads(resources.files("nnunetv2_text.vocab").joinpath("toy_shapes.json").read_text())
    atomic_write_json(folder / "vocabulary.json", {
        **shipped, "name": name, "concepts": [{**c, "labels": [c["id"]]} for c in shipped["concepts"]
                                              if c["id"] in values]})
    return folder
