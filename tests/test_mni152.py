"""MNI152 real-anatomy dataset builder at a coarse spacing: geometry, labels, laterality, vocabulary."""
import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from dataset_conversion.mni152 import build_mni152_dataset, main
from nnunetv2_text.errors import UserInputError
from nnunetv2_text.text.vocabulary import load_vocabulary, resolve_vocabulary_path, validate_against_dataset

SPACING = 6.0


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    assert main(["-d", "901", "-n", "2", "--test", "1", "--spacing", str(SPACING), "--seed", "3",
                 "-o", str(root)]) == 0
    return root / "Dataset901_MNI152"


def _cases(ds):
    return [(ds / f"images{s}" / f"MNI152_{i:03d}_0000.nii.gz", ds / f"labels{s}" / f"MNI152_{i:03d}.nii.gz")
            for s, i in (("Tr", 0), ("Tr", 1), ("Ts", 2))]


def test_layout_and_dataset_json(dataset):
    dj = json.loads((dataset / "dataset.json").read_text())
    assert dj["channel_names"] == {"0": "T1"} and dj["file_ending"] == ".nii.gz"
    assert dj["numTraining"] == 2 and dj["vocabulary"] == "mni152"
    assert dj["labels"] == {"background": 0, "left_grey_matter": 1, "right_grey_matter": 2,
                            "left_white_matter": 3, "right_white_matter": 4}
    for img, lab in _cases(dataset):
        assert img.is_file() and lab.is_file()
    assert not [p for p in dataset.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    vocab = load_vocabulary(resolve_vocabulary_path(dj["vocabulary"]))
    validate_against_dataset(vocab, dj["labels"])
    assert vocab.lookup("left gray matter").labels == (1,)
    assert vocab.lookup("right hemisphere").labels == (2, 4)


def test_geometry_and_labels(dataset):
    images = []
    for img_path, lab_path in _cases(dataset):
        img, lab = sitk.ReadImage(str(img_path)), sitk.ReadImage(str(lab_path))
        assert img.GetSize() == lab.GetSize() and img.GetSpacing() == lab.GetSpacing() == (SPACING,) * 3
        assert np.allclose(img.GetOrigin(), lab.GetOrigin()) and img.GetDirection() == lab.GetDirection()
        # the grid spans the template's field of view (197 x 233 x 189 mm)
        assert np.allclose(np.array(img.GetSize()) * SPACING, (197, 233, 189), atol=SPACING)
        labels = sitk.GetArrayFromImage(lab)
        assert set(np.unique(labels)) == {0, 1, 2, 3, 4}
        brain_ml = (labels > 0).sum() * SPACING ** 3 / 1000
        assert 900 < brain_ml < 2500
        images.append(sitk.GetArrayFromImage(img))
    assert not np.allclose(images[0], images[1])  # subjects differ


def test_left_labels_on_subjects_left(dataset):
    """In RAS+ world coordinates (nibabel) the subject's left is x < 0; in SimpleITK's LPS it is x > 0."""
    _, lab_path = _cases(dataset)[0]
    nii = nib.load(str(lab_path))
    data = np.asarray(nii.dataobj)
    for value, left in ((1, True), (2, False), (3, True), (4, False)):
        x_ras = nib.affines.apply_affine(nii.affine, np.argwhere(data == value))[:, 0]
        on_left = float(np.mean(x_ras < 0))
        assert (on_left > 0.85) if left else (on_left < 0.15), (value, on_left)
    lab = sitk.ReadImage(str(lab_path))
    arr = sitk.GetArrayFromImage(lab)
    to_world = np.array(lab.GetDirection()).reshape(3, 3) @ np.diag(lab.GetSpacing())
    for value, sign in ((1, 1), (2, -1)):
        idx_xyz = np.argwhere(arr == value)[:, ::-1].T
        x_lps = (to_world @ idx_xyz)[0] + lab.GetOrigin()[0]
        assert np.mean(sign * x_lps > 0) > 0.85


def test_overwrite_replaces(tmp_path):
    first = build_mni152_dataset(tmp_path, 902, 1, 0, spacing=12.0, seed=0)
    (first / "stale.txt").write_text("old")
    again = build_mni152_dataset(tmp_path, 902, 1, 0, spacing=12.0, seed=1, overwrite=True)
    assert again == first and not (again / "stale.txt").exists()
    (tmp_path / "Dataset903_Other").mkdir()
    with pytest.raises(UserInputError, match="already used"):
        build_mni152_dataset(tmp_path, 903, 1, 0, spacing=12.0)


def test_existing_dataset_needs_overwrite(dataset):
    with pytest.raises(UserInputError, match="--overwrite"):
        build_mni152_dataset(dataset.parent, 901, 1, 0, SPACING)
    assert main(["-d", "901", "-n", "1", "--test", "0", "--spacing", "8", "-o", str(dataset.parent)]) == 2
