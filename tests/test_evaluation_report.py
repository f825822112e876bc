"""End-to-end evaluation of tiny prediction folders: report files, robustness, bad inputs, CoWTalk mode."""
import csv
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_text.evaluation import EvaluationInputError, evaluate_cowtalk, evaluate_folder
from nnunetv2_text.evaluation.robustness import paraphrases_to_prompt_file
from nnunetv2_text.run.evaluate import main

SPACING_XYZ = (1.0, 1.0, 2.0)  # array axis 0 (z) has 2 mm spacing
SHAPE = (12, 12, 16)  # z, y, x

VOCAB = {"format": "nnunetv2_text.vocabulary", "version": 1, "name": "Boxes", "concepts": [
    {"id": "left_box", "main": "left box", "labels": [1],
     "synonyms": ["box on the left", "left cube", "leftward box", "left block", "left brick"]},
    {"id": "right_box", "main": "right box", "labels": [2],
     "synonyms": ["box on the right", "right cube", "rightward box", "right block", "right brick"]},
    {"id": "tube", "main": "tube", "labels": [3], "synonyms": ["pipe", "vessel", "duct", "channel", "conduit"]},
    {"id": "boxes", "main": "boxes", "labels": [1, 2], "synonyms": ["both boxes", "cubes", "blocks", "bricks", "the two boxes"]},
]}


def write_image(path, arr, spacing=SPACING_XYZ, origin=(0.0, 0.0, 0.0)):
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    sitk.WriteImage(img, str(path))


def reference():
    ref = np.zeros(SHAPE, np.uint8)
    ref[4:8, 4:8, 1:5] = 1  # left box
    ref[4:8, 4:8, 10:14] = 2  # right box
    ref[2:10, 9:11, 6:8] = 3  # tube along z
    return ref


def make_folders(tmp_path, predictions, refs=None):
    """predictions: {case: {prompt: array}}; references default to :func:`reference` for every case."""
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    pred_dir.mkdir()
    ref_dir.mkdir()
    cases = {}
    for case, prompts in predictions.items():
        write_image(ref_dir / f"{case}.nii.gz", (refs or {}).get(case, reference()))
        cases[case] = {}
        for i, (prompt, arr) in enumerate(prompts.items()):
            name = f"{case}_p{i}.nii.gz"
            write_image(pred_dir / name, arr)
            cases[case][prompt] = {"file": name, "voxels": int(arr.sum()), "volume_ml": 0.0, "probabilities": None}
    (pred_dir / "manifest.json").write_text(json.dumps(
        {"format": "nnunetv2_text.manifest", "version": 1, "file_ending": ".nii.gz", "model": {"trainer": "t"},
         "cases": cases}))
    vocab = tmp_path / "boxes.json"
    vocab.write_text(json.dumps(VOCAB))
    return pred_dir, ref_dir, vocab


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_report_files_and_rows(tmp_path):
    ref = reference()
    no_tube = ref.copy()
    no_tube[no_tube == 3] = 0
    preds = {
        "caseA": {"left box": np.roll(ref == 1, 1, axis=0),  # shifted one voxel along z (2 mm)
                  "right box": ref == 1,  # wrong side
                  "pipe": ref == 3},
        "caseB": {"tube": np.zeros(SHAPE, bool),  # correct negative
                  "boxes": np.isin(ref, [1, 2])},
    }
    pred_dir, ref_dir, vocab = make_folders(tmp_path, preds, {"caseB": no_tube})
    out = tmp_path / "out"
    assert main(["-p", str(pred_dir), "-r", str(ref_dir), "--vocab", str(vocab), "-o", str(out),
                 "--tubular", "tube", "--num_processes", "2"]) == 0
    rows = {(r["case"], r["prompt"]): r for r in read_rows(out / "metrics.csv")}
    assert len(rows) == 5
    assert list(read_rows(out / "metrics.csv")[0])[:11] == [
        "case", "prompt", "concept", "is_negative", "dice", "nsd", "hd95_mm", "cldice", "betti0_error",
        "pred_volume_ml", "ref_volume_ml"]
    shifted = rows[("caseA", "left box")]
    assert float(shifted["hd95_mm"]) == pytest.approx(2.0)  # z spacing, not x spacing
    assert float(shifted["dice"]) == pytest.approx(0.75)
    assert float(shifted["ref_volume_ml"]) == pytest.approx(64 * 2.0 / 1000)
    assert float(shifted["wrong_side_fraction"]) == 0.0
    wrong = rows[("caseA", "right box")]
    assert float(wrong["dice"]) == 0.0 and float(wrong["wrong_side_fraction"]) == 1.0
    assert rows[("caseA", "pipe")]["concept"] == "tube" and float(rows[("caseA", "pipe")]["cldice"]) == 1.0
    assert math.isnan(float(rows[("caseB", "boxes")]["cldice"]))  # clDice only for --tubular concepts
    neg = rows[("caseB", "tube")]
    assert neg["is_negative"] == "True" and float(neg["dice"]) == 1.0 and float(neg["pred_volume_ml"]) == 0.0
    assert neg["hd95_mm"] == "inf"

    summary = json.loads((out / "summary.json").read_text())
    assert summary["per_concept"]["tube"]["n_positive"] == 1 and summary["per_concept"]["tube"]["n_negative"] == 1
    assert summary["per_concept"]["tube"]["negative"]["false_positive_rate"] == 0.0
    assert summary["overall"]["n_positive"] == 4 and summary["overall"]["n_cases"] == 2
    assert summary["left_right"]["right_box"]["confusion_rate"] == 1.0
    assert summary["left_right"]["left_box"]["confusion_rate"] == 0.0
    report = (out / "report.md").read_text()
    assert "## Per concept" in report and "Left/right confusion" in report and "dice_boxplot.png" in report
    assert (out / "dice_boxplot.png").stat().st_size > 1000


def test_robustness_known_spread(tmp_path):
    ref = reference()
    half = (ref == 1).copy()
    half[:, :, 3:] = False  # 2 of 4 columns along x: half of the box
    preds = {"c": {"left box": ref == 1, "the box at left": half, "sinister box": np.zeros(SHAPE, bool),
                   "right box": ref == 2}}
    pred_dir, ref_dir, vocab = make_folders(tmp_path, preds)
    para = tmp_path / "para.json"
    para.write_text(json.dumps({"left box": ["left box", "the box at left", "sinister box"]}))
    summary = evaluate_folder(pred_dir, ref_dir, vocab, tmp_path / "out", paraphrases=para)
    rob = summary["robustness"]["left_box"]
    assert rob["n_wordings"] == 3 and rob["n_cases"] == 1
    assert rob["mean_dice"] == pytest.approx(5 / 9)
    assert rob["std_dice"] == pytest.approx(math.sqrt(14) / 9)
    assert rob["worst_dice"] == 0.0 and rob["gap"] == pytest.approx(5 / 9)
    assert "right_box" not in summary["robustness"]  # one wording only
    (row,) = read_rows(tmp_path / "out" / "robustness.csv")
    assert row["concept"] == "left_box" and float(row["std_dice"]) == pytest.approx(math.sqrt(14) / 9, abs=1e-5)
    assert (tmp_path / "out" / "robustness_boxplot.png").is_file()
    assert "Prompt robustness" in (tmp_path / "out" / "report.md").read_text()

    prompts = json.loads(paraphrases_to_prompt_file(para, tmp_path / "prompts.json").read_text())
    assert prompts == {"prompts": ["left box", "the box at left", "sinister box"]}


def _expect_error(tmp_path, pred_dir, ref_dir, vocab, *fragments, paraphrases=None):
    out = tmp_path / "out"
    with pytest.raises(EvaluationInputError) as err:
        evaluate_folder(pred_dir, ref_dir, vocab, out, paraphrases=paraphrases)
    for f in fragments:
        assert f in str(err.value)
    assert not out.exists()  # nothing written before the inputs are known to be good
    argv = ["-p", str(pred_dir), "-r", str(ref_dir), "--vocab", str(vocab), "-o", str(out)]
    assert main(argv + (["--paraphrases", str(paraphrases)] if paraphrases else [])) == 2
    assert not out.exists()


def test_missing_prediction_file(tmp_path):
    pred_dir, ref_dir, vocab = make_folders(tmp_path, {"c1": {"left box": reference() == 1}})
    (pred_dir / "c1_p0.nii.gz").unlink()
    _expect_error(tmp_path, pred_dir, ref_dir, vocab, "c1_p0.nii.gz", "'c1'")


def test_geometry_mismatch(tmp_path):
    pred_dir, ref_dir, vocab = make_folders(tmp_path, {"c1": {"left box": reference() == 1}})
    write_image(ref_dir / "c1.nii.gz", reference(), spacing=(1.0, 1.0, 1.0))
    _expect_error(tmp_path, pred_dir, ref_dir, vocab, "c1.nii.gz", "'c1'", "spacing")
    write_image(ref_dir / "c1.nii.gz", reference(), origin=(0.0, 5.0, 0.0))
    _expect_error(tmp_path, pred_dir, ref_dir, vocab, "origin")


def test_unknown_prompt_and_missing_reference(tmp_path):
    pred_dir, ref_dir, vocab = make_folders(tmp_path, {"c1": {"middle box": reference() == 1}})
    _expect_error(tmp_path, pred_dir, ref_dir, vocab, "middle box")
    para = tmp_path / "para.json"
    para.write_text(json.dumps({"boxes": ["middle box"]}))
    evaluate_folder(pred_dir, ref_dir, vocab, tmp_path / "ok", paraphrases=para)  # now it is mapped
    (ref_dir / "c1.nii.gz").unlink()
    _expect_error(tmp_path, pred_dir, ref_dir, vocab, "c1", "reference", paraphrases=para)


# ----------------------------------------------------------------------------- CoWTalk mode
@pytest.mark.parametrize("no_image", [False, True])
def test_cowtalk_table(tmp_path, no_image):
    shape = (6, 6, 20)
    gt = np.zeros(shape, np.uint8)
    gt[2:4, 2:4, 1:19] = 1
    gt[4:6, 0:2, 2:10] = 13
    raw, pred_dir, ref_dir = tmp_path / "raw", tmp_path / "pred", tmp_path / "ref"
    for d in (raw / "imagesTr", raw / "instructionsTr", pred_dir, ref_dir):
        d.mkdir(parents=True)
    (raw / "dataset.json").write_text(json.dumps({"file_ending": ".nii.gz", "cowtalk": {"no_image": no_image}}))
    broken = gt.copy()
    broken[:, :, 9:11][broken[:, :, 9:11] == 1] = 0  # disconnected class 1
    first = 0 if no_image else 1
    for case, inp, errors in (("s1", broken, [{"type": "disconnection", "label": 1}]), ("s2", gt, [])):
        for k in range(1, 14):
            write_image(raw / "imagesTr" / f"{case}_{first + k - 1:04d}.nii.gz", inp == k)
        if not no_image:
            write_image(raw / "imagesTr" / f"{case}_0000.nii.gz", np.zeros(shape))
        (raw / "instructionsTr" / f"{case}.json").write_text(json.dumps({"errors": errors}))
        write_image(pred_dir / f"{case}.nii.gz", gt)
        write_image(ref_dir / f"{case}.nii.gz", gt)
    table = {r["error_type"]: r for r in evaluate_cowtalk(pred_dir, ref_dir, raw, tmp_path / "out")}
    assert list(table) == ["none", "disconnection", "all"]
    d = table["disconnection"]
    assert d["n_cases"] == 1
    assert d["betti0_input"] == 0.5 and d["betti0_refined"] == 0.0  # class 1: 2 vs 1 components; class 13 fine
    assert d["dice_input"] == pytest.approx((2 * 64 / (64 + 72) + 1.0) / 2)
    assert d["dice_refined"] == 1.0 and d["cldice_refined"] == pytest.approx(1.0)
    assert d["cldice_input"] < 1.0
    # the named vessel (class 1) alone: its Dice, not the average with the untouched class 13
    assert d["dice_named_input"] == pytest.approx(2 * 64 / (64 + 72)) and d["dice_named_refined"] == 1.0
    assert math.isnan(table["none"]["dice_named_input"])
    assert table["none"]["dice_input"] == 1.0 and table["all"]["n_cases"] == 2
    assert [r["error_type"] for r in read_rows(tmp_path / "out" / "cowtalk_table.csv")] == ["none", "disconnection", "all"]
    assert (tmp_path / "out" / "cowtalk_heatmap.png").stat().st_size > 1000
    assert "disconnection" in (tmp_path / "out" / "report.md").read_text()


def test_cowtalk_missing_channel(tmp_path):
    raw, pred_dir, ref_dir = tmp_path / "raw", tmp_path / "pred", tmp_path / "ref"
    for d in (raw / "imagesTr", raw / "instructionsTr", pred_dir, ref_dir):
        d.mkdir(parents=True)
    (raw / "dataset.json").write_text(json.dumps({"file_ending": ".nii.gz"}))
    write_image(pred_dir / "s1.nii.gz", np.zeros((4, 4, 4)))
    write_image(ref_dir / "s1.nii.gz", np.zeros((4, 4, 4)))
    with pytest.raises(EvaluationInputError, match="s1_0001.nii.gz"):
        evaluate_cowtalk(pred_dir, ref_dir, raw, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unannotated_pairs_are_skipped_and_counted(tmp_path):
    """A merged dataset's sources.json (beside the reference folder): a concept that a case's source does
    not annotate is not scored there, whatever the mask shows."""
    ref = reference()
    preds = {"dsA_c1": {"tube": ref == 3, "left box": ref == 1},
             "dsB_c1": {"tube": np.zeros(SHAPE, bool), "left box": ref == 1}}
    pred_dir, ref_dir, vocab = make_folders(tmp_path, preds)
    (tmp_path / "sources.json").write_text(json.dumps({
        "format": "nnunetv2_text.sources", "version": 1,
        "sources": {"A": {"annotated_concepts": ["tube", "left_box"]}, "B": {"annotated_concepts": ["left_box"]}},
        "cases": {"dsA_c1": "A", "dsB_c1": "B"}}))
    summary = evaluate_folder(pred_dir, ref_dir, vocab, tmp_path / "out")
    assert summary["skipped_unannotated"] == 1  # the tube of source B
    assert summary["per_concept"]["tube"]["n_positive"] == 1 and summary["per_concept"]["tube"]["dice"]["mean"] == 1.0
    assert summary["per_concept"]["left_box"]["n_positive"] == 2
    assert {(r["case"], r["prompt"]) for r in read_rows(tmp_path / "out" / "metrics.csv")} == {
        ("dsA_c1", "tube"), ("dsA_c1", "left box"), ("dsB_c1", "left box")}
