"""nnUNetv2_text_predict as a cluster user runs it: parts, resume after a kill, and bad input."""
from __future__ import annotations

import json
import shutil

import pytest

from conftest import CASE_A, CASE_B, predict_args, run_cli
from nnunetv2_text.inference.prompt_file import PromptFileError, parse_prompt_text, unique_slugs
from nnunetv2_text.utils.io import TMP_MARKER


@pytest.fixture()
def images(toy_dataset, tmp_path):
    """A copy of the held-out images (tests may add or break files)."""
    dst = tmp_path / "images"
    shutil.copytree(toy_dataset["raw"] / "imagesTs", dst)
    return dst


def predict(toy_dataset, trained_model, env, inp, out, prompts, *extra, check=True):
    return run_cli(predict_args(toy_dataset, trained_model, inp, out, prompts, *extra), env, check=check)


def test_parts_partition_cases_and_share_one_manifest(toy_dataset, trained_model, nnunet_env, images, tmp_path):
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"prompts": ["ball"], "cases": {CASE_B: ["box"]}}), encoding="utf-8")
    out = tmp_path / "out"
    seen = []
    for part in range(2):
        predict(toy_dataset, trained_model, nnunet_env, images, out, prompts, "--part_id", str(part),
                "--num_parts", "2")
        frags = sorted(p.stem for p in (out / ".manifest").glob("*.json"))
        seen.append(frags)
    all_cases = sorted(p.name[:-12] for p in images.glob("*_0000.nii.gz"))
    assert seen[0] == all_cases[0::2] and seen[1] == all_cases
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["cases"]) == all_cases
    assert list(manifest["cases"][CASE_B]) == ["ball", "box"]  # global prompts then the case's own
    assert list(manifest["cases"][CASE_A]) == ["ball"]


def test_continue_prediction_after_a_kill(toy_dataset, trained_model, nnunet_env, images, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("ball\nrod\n", encoding="utf-8")
    out = tmp_path / "out"
    predict(toy_dataset, trained_model, nnunet_env, images, out, prompts)
    first = json.loads((out / "manifest.json").read_text())
    # simulate a job killed while exporting case B: its fragment and a mask gone, a temp file left over
    (out / ".manifest" / f"{CASE_B}.json").unlink()
    (out / f"{CASE_B}_rod.nii.gz").unlink()
    (out / f"{CASE_B}_rod{TMP_MARKER}_x1y2.nii.gz").write_bytes(b"half a file")
    untouched = (out / f"{CASE_A}_ball.nii.gz").stat().st_mtime_ns
    predict(toy_dataset, trained_model, nnunet_env, images, out, prompts, "--continue_prediction")
    assert (out / f"{CASE_B}_rod.nii.gz").is_file()
    assert not list(out.glob(f"*{TMP_MARKER}*"))
    assert (out / f"{CASE_A}_ball.nii.gz").stat().st_mtime_ns == untouched  # finished cases were skipped
    assert json.loads((out / "manifest.json").read_text())["cases"] == first["cases"]


@pytest.mark.parametrize("content, message", [
    (None, "prompt file not found"),
    ('{"prompts": ["ball", ', "invalid JSON at line 1"),
    ('{"prompts": ["ball", "  "]}', "prompt #1: empty prompt"),
    (b"ball\n\xff\xfebox\n", "not UTF-8 text"),
    ('{"cases": {"toy_999": ["ball"]}}', "case 'toy_999' is not among the input cases"),
    ("word " * 300, "more than the encoder's limit"),
])
def test_bad_prompt_files_stop_before_any_output(toy_dataset, trained_model, nnunet_env, images, tmp_path,
                                                 content, message):
    prompts = tmp_path / ("p.json" if isinstance(content, str) and content.startswith("{") else "p.txt")
    if isinstance(content, bytes):
        prompts.write_bytes(content)
    elif content is not None:
        prompts.write_text(content, encoding="utf-8")
    out = tmp_path / "out"
    res = predict(toy_dataset, trained_model, nnunet_env, images, out, prompts, check=False)
    assert res.returncode == 2, res.stderr[-2000:]
    assert message in res.stderr and str(prompts) in res.stderr
    assert not out.exists() or not any(out.rglob("*.nii.gz"))


def test_wrong_channel_count_names_the_case(toy_dataset, trained_model, nnunet_env, images, tmp_path):
    shutil.copy(images / f"{CASE_B}_0000.nii.gz", images / f"{CASE_B}_0001.nii.gz")
    prompts = tmp_path / "p.txt"
    prompts.write_text("ball\n", encoding="utf-8")
    out = tmp_path / "out"
    res = predict(toy_dataset, trained_model, nnunet_env, images, out, prompts, check=False)
    assert res.returncode == 2 and f"case '{CASE_B}' has 2 channel file(s)" in res.stderr
    assert not out.exists()


def test_prompt_file_formats_and_unique_slugs():
    spec = parse_prompt_text("left kidney\n\nLiver\n", "p.txt")
    assert spec.prompts_for("any") == ["left kidney", "Liver"]
    spec = parse_prompt_text(json.dumps({"prompts": ["a"], "cases": {"c1": ["b", "a"]}}), "p.json")
    assert spec.prompts_for("c1") == ["a", "b"] and spec.prompts_for("c2") == ["a"]
    with pytest.raises(PromptFileError, match="no prompt for case 'c2'"):
        parse_prompt_text(json.dumps({"cases": {"c1": ["b"]}}), "p.json").check_cases(["c1", "c2"])
    slugs = unique_slugs(["Left kidney", "left-kidney", "left kidney!", "???"])
    assert list(slugs.values()) == ["left_kidney", "left_kidney_2", "left_kidney_3", "prompt"]
