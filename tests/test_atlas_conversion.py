"""Brain-atlas dataset builder at a coarse spacing: atlas names, laterality, unions, dropped regions, refusals."""
import json

import nibabel as nib
import numpy as np
import pytest

from dataset_conversion.atlas import MIN_REGION_VOXELS, build_atlas_dataset, load_atlas, main, region_table
from nnunetv2_text.errors import UserInputError
from nnunetv2_text.text.vocabulary import load_vocabulary, resolve_vocabulary_path

SPACING = 4.0


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    assert main(["-d", "961", "-n", "2", "--test", "1", "--spacing", str(SPACING), "--seed", "2",
                 "-o", str(root)]) == 0
    return root / "Dataset961_AAL"


def _label_files(ds):
    return sorted((ds / "labelsTr").glob("*.nii.gz")) + sorted((ds / "labelsTs").glob("*.nii.gz"))


def test_labels_are_named_by_the_atlas(dataset):
    dj = json.loads((dataset / "dataset.json").read_text())
    _, array, names = load_atlas("aal")
    assert dj["vocabulary"] == "aal" and dj["overwrite_image_reader_writer"] == "SimpleITKIOWithReorient"
    kept = [n for n in names.values() if n not in dj["dropped_regions"]]
    assert list(dj["labels"]) == ["background"] + kept  # the atlas's own spelling and order
    assert list(dj["labels"].values()) == list(range(len(kept) + 1))  # consecutive, as nnU-Net needs
    assert dj["labels"]["Hippocampus_L"] == 37 - sum(  # AAL id 37, shifted by the dropped ones before it
        1 for i, n in names.items() if i < 37 and n in dj["dropped_regions"])
    assert len(_label_files(dataset)) == 3 and len(list((dataset / "imagesTs").glob("*_0000.nii.gz"))) == 1
    for f in _label_files(dataset):
        present = set(np.unique(np.asarray(nib.load(str(f)).dataobj)).tolist())
        assert present <= set(dj["labels"].values()) and len(present) > 0.95 * len(dj["labels"])


def test_dropped_regions_are_named(dataset, caplog):
    dj = json.loads((dataset / "dataset.json").read_text())
    image, array, names = load_atlas("aal")
    counts = np.bincount(array.ravel())
    expected = [n for i, n in names.items() if counts[i] / SPACING ** 3 < MIN_REGION_VOXELS]
    assert dj["dropped_regions"] == expected == ["Vermis_1_2"]  # 404 mm^3: 6.3 voxels of 64 mm^3
    with caplog.at_level("INFO"):
        labels, dropped = region_table("aal", 1.0)
    assert dropped == [] and len(labels) == 117
    with caplog.at_level("INFO"):
        _, dropped = region_table("aal", 6.0)
    assert "Vermis_1_2" in dropped and all(n in caplog.text for n in dropped)


def _x_ras(nii, mask):
    return nib.affines.apply_affine(nii.affine, np.argwhere(mask))[:, 0]


def test_left_regions_on_the_subjects_left(dataset):
    """World RAS+: the subject's left is x < 0. Each subject is rotated and deformed, so medial regions may
    cross world x = 0; a left region must still lie left of its right twin, and lateral ones on the left."""
    labels = json.loads((dataset / "dataset.json").read_text())["labels"]
    pairs = [(n, n[:-2] + "_R") for n in labels if n.endswith("_L") and n[:-2] + "_R" in labels]
    assert len(pairs) == 54  # every AAL pair (the 8 vermis parts are midline); none dropped at 4 mm
    for f in _label_files(dataset):
        nii = nib.load(str(f))
        data = np.asarray(nii.dataobj)
        for left, right in pairs:
            xl, xr = _x_ras(nii, data == labels[left]), _x_ras(nii, data == labels[right])
            assert xl.mean() < xr.mean(), (f.name, left)
            if min(-xl.mean(), xr.mean()) > 45:  # lateral regions (temporal, parietal, ...) lie wholly on their side
                assert np.mean(xl < 0) > 0.95 and np.mean(xr > 0) > 0.95, (f.name, left)


def test_bilateral_union_is_left_plus_right(dataset):
    dj = json.loads((dataset / "dataset.json").read_text())
    vocab = load_vocabulary(resolve_vocabulary_path("aal"), dj["labels"], dj["dropped_regions"])
    hip = vocab.lookup("hippocampus")
    assert hip is not None and set(hip.labels) == {dj["labels"]["Hippocampus_L"], dj["labels"]["Hippocampus_R"]}
    data = np.asarray(nib.load(str(_label_files(dataset)[0])).dataobj)
    union = np.isin(data, hip.labels)
    assert np.array_equal(union, (data == dj["labels"]["Hippocampus_L"]) | (data == dj["labels"]["Hippocampus_R"]))
    assert union.sum() > 0


@pytest.mark.parametrize("argv, needle", [
    (["--atlas", "brodmann"], "'brodmann'"),
    (["--spacing", "0"], "--spacing 0"),
    (["--spacing", "-2"], "--spacing -2"),
    (["-n", "0"], "-n 0"),
])
def test_bad_options_refused_before_writing(tmp_path, capsys, argv, needle):
    assert main(["-d", "962", "-o", str(tmp_path), *argv]) == 2
    assert needle in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_existing_dataset_needs_overwrite(tmp_path, capsys):
    first = build_atlas_dataset(tmp_path, 963, "aal", 1, 0, spacing=12.0, seed=0)
    (first / "stale.txt").write_text("old")
    assert main(["-d", "963", "-n", "1", "--test", "0", "--spacing", "12", "-o", str(tmp_path)]) == 2
    assert "--overwrite" in capsys.readouterr().err and (first / "stale.txt").exists()
    with pytest.raises(UserInputError, match="already used"):
        build_atlas_dataset(tmp_path, 963, "aal", 1, 0, spacing=12.0)
    again = build_atlas_dataset(tmp_path, 963, "aal", 1, 0, spacing=12.0, seed=1, overwrite=True)
    assert again == first and not (again / "stale.txt").exists()


@pytest.mark.parametrize("atlas, stem", [("aal3", "AAL3"), ("hcpex", "HCPEx")])
def test_other_atlases_convert(tmp_path, atlas, stem):
    ds = build_atlas_dataset(tmp_path, 964, atlas, 1, 0, spacing=12.0)
    dj = json.loads((ds / "dataset.json").read_text())
    _, _, names = load_atlas(atlas)
    assert ds.name == f"Dataset964_{stem}" and "vocabulary" not in dj  # no shipped vocabulary: the user's own
    assert set(dj["labels"]) - {"background"} | set(dj["dropped_regions"]) == set(names.values())


def test_groups_keep_their_remaining_parts_when_a_region_is_dropped(dataset):
    """At 4 mm Vermis_1_2 is dropped: 'vermis' and 'cerebellum' are still answered with the parts the
    dataset has, while the dropped region's own concept is gone; without the dropped list they vanish."""
    dj = json.loads((dataset / "dataset.json").read_text())
    vocab = load_vocabulary(resolve_vocabulary_path("aal"), dj["labels"], dj["dropped_regions"])
    vermis = {v for n, v in dj["labels"].items() if n.startswith("Vermis_")}
    assert len(vermis) == 7 and set(vocab.lookup("vermis").labels) == vermis
    assert vermis < set(vocab.lookup("cerebellum").labels)
    assert vocab.lookup("vermis lobules I-II") is None and "vermis_1_2" not in {c.id for c in vocab.concepts}
    strict = load_vocabulary(resolve_vocabulary_path("aal"), dj["labels"])
    assert strict.lookup("vermis") is None and strict.lookup("cerebellum") is None


def test_a_union_left_with_one_region_is_that_regions_concept():
    from nnunetv2_text.text.vocabulary import parse_vocabulary

    obj = {"concepts": [
        {"id": "a", "main": "region a", "synonyms": list("12345"), "labels": ["A"]},
        {"id": "b", "main": "region b", "synonyms": list("67890"), "labels": ["B"]},
        {"id": "ab", "main": "regions a and b", "synonyms": list("vwxyz"), "labels": ["A", "B"]}]}
    kept = parse_vocabulary(obj, dataset_labels={"background": 0, "A": 1}, dropped_labels=["B"])
    assert [c.id for c in kept.concepts] == ["a"]
    both = parse_vocabulary(obj, dataset_labels={"background": 0, "A": 1, "B": 2})
    assert [c.id for c in both.concepts] == ["a", "b", "ab"]
