"""CoWTalk conversion: phantom, error synthesis, instructions and the command end to end (small volumes)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cc3d
import numpy as np
import pytest
import SimpleITK as sitk

from dataset_conversion.cowtalk.centerline import Geometry, build_centerline, component_count
from dataset_conversion.cowtalk.constants import (DATASET_LABELS, ERROR_TYPES, SHAPE_CHANNEL_ORDER, TOPCOW_LABELS,
                                                  label_map_from_channels, shape_channels, to_contiguous, to_topcow)
from dataset_conversion.cowtalk.errors import apply_error, apply_error_to_label_map, variant_channels
from dataset_conversion.cowtalk.instructions import (_LONG, _SHORT, describe_error, load_case_instructions,
                                                     load_variants, validate_record)
from dataset_conversion.cowtalk.phantom import write_phantom_topcow
from dataset_conversion.cowtalk.sampling import has_effect, proximal_anchor, sample_variant, variant_seed

REPO = Path(__file__).resolve().parents[1]
CLI = shutil.which("nnUNetv2_text_convert_cowtalk", path=str(Path(sys.executable).parent)) or shutil.which(
    "nnUNetv2_text_convert_cowtalk")


def run_cli(*args: str, env_raw: str | None = None) -> subprocess.CompletedProcess:
    assert CLI is not None, "console script nnUNetv2_text_convert_cowtalk is not installed"
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_raw"}
    if env_raw is not None:
        env["nnUNet_raw"] = env_raw
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=120)


def read(path: Path) -> tuple[np.ndarray, sitk.Image]:
    img = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(img), img


def same_geometry(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize() == b.GetSize() and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-5)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-6))


def leftovers(root: Path) -> list[str]:
    """Anything the command left in the output root (datasets or hidden temporary folders)."""
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("topcow")
    write_phantom_topcow(folder, n_subjects=2, modalities=("ct", "mr"), seed=0)
    return folder


@pytest.fixture(scope="module")
def subject(phantom):
    """Label map and geometry of the subject stored with a flipped (RAS-like) direction."""
    arr, img = read(phantom / "cow_seg_labelsTr" / "topcow_ct_002.nii.gz")
    return arr, Geometry.from_sitk(img)


@pytest.fixture(scope="module")
def converted(phantom, tmp_path_factory):
    """The same conversion run twice through the command (determinism), with one test subject."""
    split = tmp_path_factory.mktemp("split") / "split.json"
    split.write_text(json.dumps({"train": ["topcow_ct_001", "topcow_ct_002", "topcow_mr_001"],
                                 "test": ["topcow_mr_002"]}))
    outs = []
    for run in ("a", "b"):
        out = tmp_path_factory.mktemp(f"raw_{run}")
        extra = ["--num_processes", "2"] if run == "b" else []
        res = run_cli("-i", str(phantom), "-d", "7", "-o", str(out), "--variants", "2", "--seed", "3",
                      "--split", str(split), *extra)
        assert res.returncode == 0, res.stderr
        outs.append(out / "Dataset007_CoWTalk")
    return outs


# ---------------------------------------------------------------------------------------------- constants
def test_label_mapping_round_trip():
    topcow = np.array([[[0, 1, 2, 12, 15, 15]]], dtype=np.uint8)
    contiguous = to_contiguous(topcow)
    assert contiguous.tolist() == [[[0, 1, 2, 12, 13, 13]]]
    assert np.array_equal(to_topcow(contiguous), topcow)
    for bad in (13, 14, 20):
        with pytest.raises(ValueError, match=str(bad)):
            to_contiguous(np.array([0, bad]))
    with pytest.raises(ValueError):
        to_topcow(np.array([0, 14]))
    assert DATASET_LABELS["3rd-A2"] == 13 and sorted(DATASET_LABELS.values()) == list(range(14))


def test_shape_channels_round_trip(subject):
    labels, _ = subject
    ch = shape_channels(labels)
    assert ch.shape == (13,) + labels.shape and ch.dtype == np.uint8 and set(np.unique(ch)) <= {0, 1}
    assert ch[12].sum() == (labels == 15).sum() > 0
    assert np.array_equal(label_map_from_channels(ch), labels)


def test_vocabulary_is_valid():
    from nnunetv2_text.text.vocabulary import load_vocabulary, validate_against_dataset
    vocab = load_vocabulary(REPO / "vocab" / "topcow.json")
    assert vocab.name == "TopCoW"
    # every TopCoW class (15, not 13) has its own concept; groups are unions
    validate_against_dataset(vocab, {"background": 0, **{n: i for i, n in TOPCOW_LABELS.items()}})
    assert vocab.concept("anterior_circulation").labels == (10, 11, 12, 15)
    assert vocab.concept("posterior_circulation").labels == (2, 3, 8, 9)
    assert vocab.lookup("right MCA").labels == (5,) and vocab.lookup("L-ACA").labels == (12,)
    assert all(len(c.synonyms) >= 5 for c in vocab.concepts)


# ---------------------------------------------------------------------------------------------- phantom
def test_phantom_layout_geometry_and_speed(tmp_path):
    t0 = time.perf_counter()
    ids = write_phantom_topcow(tmp_path, n_subjects=2, modalities=("ct", "mr"))
    assert (time.perf_counter() - t0) / len(ids) < 1.0
    assert ids == ["topcow_ct_001", "topcow_mr_001", "topcow_ct_002", "topcow_mr_002"]
    directions = set()
    for s in ids:
        img = sitk.ReadImage(str(tmp_path / "imagesTr" / f"{s}_0000.nii.gz"))
        lab_arr, lab = read(tmp_path / "cow_seg_labelsTr" / f"{s}.nii.gz")
        assert same_geometry(img, lab)
        directions.add(img.GetDirection())
        assert set(np.unique(lab_arr)) == {0, *TOPCOW_LABELS}
        geometry = Geometry.from_sitk(lab)
        for c in SHAPE_CHANNEL_ORDER:
            assert len(build_centerline(lab_arr == c, geometry.spacing_zyx).coords) >= 12, (s, c)
        # vessels are bright in the image
        im = sitk.GetArrayFromImage(img)
        assert im[lab_arr > 0].mean() > im[lab_arr == 0].mean() + 100
    assert len(directions) == 2  # one identity, one flipped direction


def test_phantom_right_is_patient_right(subject, phantom):
    """Patient right is world -x (LPS) whatever the direction matrix: R-ICA lies at lower world x than L-ICA."""
    for s in ("topcow_ct_001", "topcow_ct_002"):
        arr, img = read(phantom / "cow_seg_labelsTr" / f"{s}.nii.gz")
        g = Geometry.from_sitk(img)
        x_r = g.index_to_world(np.argwhere(arr == 4)).mean(0)[0]
        x_l = g.index_to_world(np.argwhere(arr == 6)).mean(0)[0]
        assert x_r < x_l


# ---------------------------------------------------------------------------------------------- errors
def local_params(labels, geometry, label, **kw):
    p = {"anchor": "proximal", "anchor_voxel": proximal_anchor(labels, label, geometry),
         "spacing_zyx": list(geometry.spacing_zyx), "cylinder_half_length": 1.5, "select_radius": 4.0}
    p.update(kw)
    return p


def check_others_untouched(labels, error):
    out = apply_error_to_label_map(labels, error)
    other = (labels != error["label"]) & (labels != 0)
    assert np.array_equal(out[other], labels[other])
    return out


@pytest.mark.parametrize("label", [5, 11, 15])
def test_thinning_and_thickening(subject, label):
    labels, g = subject
    vol = int((labels == label).sum())
    for etype, params, sign in [("global_thinning", {"radius": 1, "spacing_zyx": list(g.spacing_zyx)}, -1),
                                ("global_thickening", {"radius": 1}, +1),
                                ("local_thinning", local_params(labels, g, label, range_pct=[40, 80], radius=0.5), -1),
                                ("local_thickening", local_params(labels, g, label, range_pct=[40, 80], radius=3.0), +1)]:
        error = {"type": etype, "label": label, "params": params}
        new = apply_error(labels, error)
        assert np.sign(int(new.sum()) - vol) == sign, etype
        assert component_count(new) == component_count(labels == label), etype  # no accidental cut
        out = check_others_untouched(labels, error)
        if sign > 0:  # growth only into background
            grown = new & (labels != label)
            assert grown.any() and np.all(labels[grown] == 0)
        assert np.array_equal(out == label, new), etype
        if etype.startswith("local"):  # far from the span (near the anchor end) nothing changes
            a = np.asarray(params["anchor_voxel"])
            near = np.zeros_like(new)
            near[tuple(slice(max(v - 2, 0), v + 3) for v in a)] = True
            assert np.array_equal(new & near, (labels == label) & near), etype


def test_missing_removes_class(subject):
    labels, _ = subject
    error = {"type": "missing", "label": 15, "params": {}}
    out = check_others_untouched(labels, error)
    assert not np.any(out == 15) and not apply_error(labels, error).any()


@pytest.mark.parametrize("label", [2, 4, 11])
def test_disconnection_and_fragmentation_add_components(subject, label):
    labels, g = subject
    before = cc3d.connected_components((labels == label).astype(np.uint8), connectivity=26).max()
    err = {"type": "disconnection", "label": label,
           "params": local_params(labels, g, label, range_pct=[45, 58])}
    new = apply_error(labels, err)
    assert cc3d.connected_components(new.astype(np.uint8), connectivity=26).max() >= before + 1
    check_others_untouched(labels, err)
    err = {"type": "fragmentation", "label": label,
           "params": local_params(labels, g, label, gaps_pct=[[25, 35], [62, 72]])}
    new = apply_error(labels, err)
    assert cc3d.connected_components(new.astype(np.uint8), connectivity=26).max() >= max(3, before + 2)
    check_others_untouched(labels, err)


@pytest.mark.parametrize("label", [1, 7, 12])
def test_shortening_shortens_centerline(subject, label):
    labels, g = subject
    err = {"type": "shortening", "label": label, "params": local_params(labels, g, label, range_pct=[50, 100])}
    new = apply_error(labels, err)
    before = build_centerline(labels == label, g.spacing_zyx).length_mm()
    after = build_centerline(new, g.spacing_zyx).length_mm()
    assert 0 < after < 0.8 * before
    assert new[tuple(err["params"]["anchor_voxel"])]  # the proximal end is kept
    check_others_untouched(labels, err)


def test_proximal_anchor_follows_anatomy(subject):
    labels, g = subject
    # BA: most inferior end; R-MCA: end at the R-ICA
    ba = proximal_anchor(labels, 1, g)
    ba_z = g.index_to_world(np.argwhere(labels == 1))[:, 2]
    assert g.index_to_world(np.array([ba]))[0, 2] <= ba_z.min() + 1.0
    mca = np.array(proximal_anchor(labels, 5, g))
    ica = np.argwhere(labels == 4)
    ends = build_centerline(labels == 5, g.spacing_zyx)
    far = ends.coords[np.argmax(np.linalg.norm(ends.coords - mca, axis=1))]
    assert np.min(np.linalg.norm(ica - mca, axis=1)) < np.min(np.linalg.norm(ica - far, axis=1))


def test_sample_variant_is_valid_and_seeded(subject):
    labels, g = subject
    seen = set()
    for v in range(6):
        seed = variant_seed(0, "topcow_ct_002", v)
        errors, masks = sample_variant(labels, g, np.random.default_rng(seed), p_none=0.0)
        again, _ = sample_variant(labels, g, np.random.default_rng(seed), p_none=0.0)
        assert errors == again
        assert 1 <= len(errors) <= 3
        assert len({e["label"] for e in errors}) == len(errors)
        for e in errors:
            seen.add(e["type"])
            assert e["type"] in ERROR_TYPES and e["type"] != "none"
            assert np.array_equal(masks[e["label"]], apply_error(labels, e))
            assert has_effect(labels, e, masks[e["label"]])
            json.dumps(e)  # params are plain JSON
    assert len(seen) >= 3
    assert variant_seed(0, "a", 1) != variant_seed(0, "a", 2) != variant_seed(1, "a", 2)
    errors, masks = sample_variant(labels, g, np.random.default_rng(0), p_none=1.0)
    assert errors == [{"type": "none", "label": None, "params": {}}] and masks == {}


def test_instruction_templates():
    for t in ERROR_TYPES:
        assert len(_SHORT[t]) >= 3 and len(_LONG[t]) >= 3, t
    err = {"type": "local_thinning", "label": 5,
           "params": {"range_pct": [70.0, 95.0], "local_radius": 2.0, "radius": 0.8}}
    texts = {describe_error(err, np.random.default_rng(s))["instruction_long"] for s in range(30)}
    assert len(texts) >= 3
    d = describe_error(err, np.random.default_rng(0))
    assert "right" in d["instruction_short"] and "MCA" in d["instruction_short"]
    assert "distal third" in d["description"] and "Viewed from behind" in d["description"]
    acom = describe_error({"type": "disconnection", "label": 10, "params": {"range_pct": [10.0, 20.0]}},
                          np.random.default_rng(1))
    assert "right end" in acom["description"]
    none = describe_error({"type": "none", "label": None, "params": {}}, np.random.default_rng(0))
    assert "unchanged" in none["instruction_short"] or "No correction" in none["instruction_short"] \
        or "as it is" in none["instruction_short"]


# ---------------------------------------------------------------------------------------------- command
def test_dataset_json_and_files(converted, phantom):
    ds = converted[0]
    meta = json.loads((ds / "dataset.json").read_text())
    assert meta["file_ending"] == ".nii.gz"
    # the dataset's own vocabulary: TopCoW terms on the contiguous ids (3rd-A2 = 13), valid for this dataset
    from nnunetv2_text.text.vocabulary import load_vocabulary, validate_against_dataset
    vocab = load_vocabulary(ds / "vocabulary.json", meta["labels"])
    validate_against_dataset(vocab, meta["labels"])
    assert 15 not in vocab.label_values() and 13 in vocab.label_values()
    assert meta["numTraining"] == 3 * 2
    assert meta["labels"] == DATASET_LABELS
    assert meta["channel_names"]["0"] == "zscore"  # CT and MR mixed
    assert [meta["channel_names"][str(i)] for i in range(1, 14)] == ["noNorm"] * 13
    ct = meta["cowtalk"]
    assert ct["shape_channels"] == {str(i + 1): t for i, t in enumerate(SHAPE_CHANNEL_ORDER)}
    assert ct["label_mapping"] == {"13": 15} and ct["no_image"] is False and ct["variants"] == 2 and ct["seed"] == 3
    train_cases = sorted(p.name[:-len(".nii.gz")] for p in (ds / "labelsTr").iterdir())
    assert train_cases == sorted(f"{s}_v{v:02d}" for s in ("topcow_ct_001", "topcow_ct_002", "topcow_mr_001")
                                 for v in range(2))
    assert sorted(p.name for p in (ds / "labelsTs").iterdir()) == ["topcow_mr_002_v00.nii.gz",
                                                                    "topcow_mr_002_v01.nii.gz"]
    assert sorted(p.name for p in (ds / "instructionsTs").iterdir()) == ["topcow_mr_002_v00.json",
                                                                          "topcow_mr_002_v01.json"]
    assert not any(p.name.startswith(".") for p in ds.rglob("*"))
    for case, sub in [("topcow_ct_002_v01", "Tr"), ("topcow_mr_002_v00", "Ts")]:
        subject_id = case.rsplit("_v", 1)[0]
        src_img = sitk.ReadImage(str(phantom / "imagesTr" / f"{subject_id}_0000.nii.gz"))
        src_lab = sitk.GetArrayFromImage(sitk.ReadImage(str(phantom / "cow_seg_labelsTr" / f"{subject_id}.nii.gz")))
        files = sorted((ds / f"images{sub}").glob(f"{case}_*.nii.gz"))
        assert [f.name for f in files] == [f"{case}_{c:04d}.nii.gz" for c in range(14)]
        image = sitk.ReadImage(str(files[0]))
        assert np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(src_img))
        target, target_img = read(ds / f"labels{sub}" / f"{case}.nii.gz")
        assert same_geometry(target_img, src_img)
        assert np.array_equal(to_topcow(target), src_lab) and target.max() == 13
        record = validate_record(json.loads((ds / f"instructions{sub}" / f"{case}.json").read_text(encoding="utf-8")))
        assert record["case_id"] == case and record["subject"] == subject_id
        channels = []
        for f in files[1:]:
            arr, img = read(f)
            assert same_geometry(img, src_img), f
            assert arr.dtype == np.uint8 and set(np.unique(arr)) <= {0, 1}
            channels.append(arr)
        channels = np.stack(channels)
        # the variant regenerates exactly from its instruction file
        assert np.array_equal(channels, variant_channels(src_lab, record["errors"]))
        gt = shape_channels(src_lab)
        changed = {SHAPE_CHANNEL_ORDER[k] for k in range(13) if not np.array_equal(channels[k], gt[k])}
        assert changed == {e["label"] for e in record["errors"] if e["type"] != "none"}


def test_instruction_files_and_variants_file(converted):
    ds = converted[0]
    records = load_variants(ds)
    assert len(records) == 4 * 2
    for r in records:
        on_disk = load_case_instructions(ds, r["case_id"])
        assert on_disk == {k: v for k, v in r.items() if k != "split"}
        assert r["split"] == ("test" if r["subject"] == "topcow_mr_002" else "train")
        assert r["variant"] == int(r["case_id"][-2:]) and r["modality"] in ("ct", "mr")
        assert r["seed"] == variant_seed(3, r["subject"], r["variant"])
        assert r["instruction_short"] == " ".join(e["instruction_short"] for e in r["errors"])
        for e in r["errors"]:
            assert e["type"] in ERROR_TYPES and e["description"] and e["instruction_long"]
            if e["type"] != "none":
                assert e["class_name"] == TOPCOW_LABELS[e["label"]]


def test_same_seed_gives_identical_files(converted):
    a, b = converted
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_ct_only_and_no_image(phantom, tmp_path):
    res = run_cli("-i", str(phantom), "-d", "8", "--variants", "1", "--modality", "ct", "--name", "CoWTalkCT",
                  env_raw=str(tmp_path))  # output root from $nnUNet_raw
    assert res.returncode == 0, res.stderr
    meta = json.loads((tmp_path / "Dataset008_CoWTalkCT" / "dataset.json").read_text())
    assert meta["channel_names"]["0"] == "CT" and meta["numTraining"] == 2
    res = run_cli("-i", str(phantom), "-d", "9", "-o", str(tmp_path), "--variants", "1", "--no-image",
                  "--modality", "mr")
    assert res.returncode == 0, res.stderr
    ds = tmp_path / "Dataset009_CoWTalk"
    meta = json.loads((ds / "dataset.json").read_text())
    assert meta["channel_names"] == {str(i): "noNorm" for i in range(13)}
    assert meta["cowtalk"]["no_image"] is True and meta["cowtalk"]["shape_channels"]["12"] == 15
    files = sorted(p.name for p in (ds / "imagesTr").glob("topcow_mr_001_v00_*"))
    assert files == [f"topcow_mr_001_v00_{c:04d}.nii.gz" for c in range(13)]
    ch0 = sitk.GetArrayFromImage(sitk.ReadImage(str(ds / "imagesTr" / files[0])))
    assert set(np.unique(ch0)) <= {0, 1}
    res = run_cli("-i", str(phantom), "-d", "10")  # neither -o nor $nnUNet_raw
    assert res.returncode != 0 and "nnUNet_raw" in res.stderr


# ---------------------------------------------------------------------------------------------- bad input
def _edit_label(folder: Path, subject_id: str, fn) -> Path:
    path = folder / "cow_seg_labelsTr" / f"{subject_id}.nii.gz"
    img = sitk.ReadImage(str(path))
    out = fn(img)
    sitk.WriteImage(out, str(path), True)
    return path


def _with_array(img: sitk.Image, arr: np.ndarray) -> sitk.Image:
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    return out


def _spacing(img):
    img.SetSpacing(tuple(s * 1.5 for s in img.GetSpacing()))
    return img


def _origin(img):
    img.SetOrigin(tuple(o + 2.0 for o in img.GetOrigin()))
    return img


def _direction(img):
    d = np.array(img.GetDirection()).reshape(3, 3)
    img.SetDirection(tuple(d[[1, 0, 2]].ravel()))
    return img


def _size(img):
    return img[:, :, :-2]


BAD_LABELS = {
    "spacing": (_spacing, "spacing"),
    "origin": (_origin, "origin"),
    "direction": (_direction, "direction"),
    "size": (_size, "size"),
    "label_13": (lambda img: _with_array(img, np.where(sitk.GetArrayFromImage(img) == 15, 13,
                                                        sitk.GetArrayFromImage(img)).astype(np.uint8)), "13"),
    "label_20": (lambda img: _with_array(img, np.where(sitk.GetArrayFromImage(img) == 1, 20,
                                                        sitk.GetArrayFromImage(img)).astype(np.uint8)), "20"),
    "empty": (lambda img: _with_array(img, np.zeros_like(sitk.GetArrayFromImage(img))), "empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_LABELS) + ["missing_label"])
def test_bad_input_stops_without_dataset(tmp_path, case):
    src = tmp_path / "topcow"
    write_phantom_topcow(src, n_subjects=2, modalities=("ct",))
    bad_subject = "topcow_ct_002"  # the first subject is fine: nothing may be written for it either
    if case == "missing_label":
        bad_file = src / "cow_seg_labelsTr" / f"{bad_subject}.nii.gz"
        bad_file.unlink()
        expect = "label file missing"
    else:
        fn, expect = BAD_LABELS[case]
        bad_file = _edit_label(src, bad_subject, fn)
    out = tmp_path / "raw"
    res = run_cli("-i", str(src), "-d", "11", "-o", str(out), "--variants", "1")
    assert res.returncode != 0
    assert bad_subject in res.stderr and expect in res.stderr, res.stderr
    assert "topcow_ct_001" not in res.stderr
    assert "Traceback" not in res.stderr
    assert leftovers(out) == []
    if case != "missing_label":
        assert str(bad_file) in res.stderr


def test_existing_dataset_id_and_overwrite(tmp_path):
    src = tmp_path / "topcow"
    write_phantom_topcow(src, n_subjects=1, modalities=("ct",))
    out = tmp_path / "raw"
    (out / "Dataset012_Other").mkdir(parents=True)
    (out / "Dataset012_Other" / "marker").write_text("x")
    res = run_cli("-i", str(src), "-d", "12", "-o", str(out), "--variants", "1")
    assert res.returncode != 0 and "Dataset012_Other" in res.stderr and "--overwrite" in res.stderr
    assert leftovers(out) == ["Dataset012_Other"]
    res = run_cli("-i", str(src), "-d", "12", "-o", str(out), "--variants", "1", "--overwrite")
    assert res.returncode == 0, res.stderr
    assert leftovers(out) == ["Dataset012_CoWTalk"]


def test_bad_split_names_subject(tmp_path):
    src = tmp_path / "topcow"
    write_phantom_topcow(src, n_subjects=1, modalities=("ct",))
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["topcow_ct_001"], "test": ["topcow_ct_042"]}))
    out = tmp_path / "raw"
    res = run_cli("-i", str(src), "-d", "13", "-o", str(out), "--split", str(split))
    assert res.returncode != 0 and "topcow_ct_042" in res.stderr and str(split) in res.stderr
    assert leftovers(out) == []


def test_every_instruction_names_exactly_its_vessel():
    """A refiner's default edit scope is the vessels an instruction names (inference/refine.py), so every
    instruction the conversion can write must name its class, and no other, in the shipped vocabulary."""
    from nnunetv2_text.text.vocabulary import load_vocabulary

    vocab = load_vocabulary(REPO / "vocab" / "topcow.json")
    params = {"global_thickening": {"radius": 1}, "global_thinning": {"radius": 2}, "missing": {},
              "local_thickening": {"range_pct": [20.0, 60.0], "radius": 2.0, "local_radius": 1.0},
              "local_thinning": {"range_pct": [70.0, 95.0], "radius": 0.8, "local_radius": 2.0},
              "shortening": {"range_pct": [50.0, 100.0]}, "disconnection": {"range_pct": [40.0, 55.0]},
              "fragmentation": {"gaps_pct": [[20.0, 30.0], [60.0, 70.0]]}}
    assert set(params) == set(ERROR_TYPES) - {"none"}
    checked = 0
    for label in TOPCOW_LABELS:
        for t, p in params.items():
            for seed in range(12):  # every template is drawn
                d = describe_error({"type": t, "label": label, "params": p}, np.random.default_rng(seed))
                for kind in ("instruction_short", "instruction_long"):
                    named = [c.labels for c in vocab.mentions(d[kind])]
                    assert named == [(label,)], (label, t, d[kind], named)
                    checked += 1
    none = describe_error({"type": "none", "label": None, "params": {}}, np.random.default_rng(0))
    assert vocab.mentions(none["instruction_short"]) == [] and checked > 2000
