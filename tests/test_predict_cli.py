"""nnUNetv2_text_predict as a cluster user runs it: parts, resume after a kill, and bad input."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import CASE_A, CASE_B, cli, predict_args, run_cli
from nnunetv2_text.inference.folder import InputError, check_case_images
from nnunetv2_text.inference.plain_nnunet import equivalent_text_predict_command
from nnunetv2_text.inference.prompt_file import PromptFileError, parse_prompt_text, unique_slugs
from nnunetv2_text.run.predict import build_parser
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
        # nnU-Net's own spellings (single dash), as nnUNetv2_predict users type them
        predict(toy_dataset, trained_model, nnunet_env, images, out, prompts, "-part_id", str(part),
                "-num_parts", "2", "-step_size", "0.5")
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
    predict(toy_dataset, trained_model, nnunet_env, images, out, prompts, "--c")  # nnU-Net's alias
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


def test_a_4d_image_is_refused_before_any_work(toy_dataset, trained_model, nnunet_env, images, tmp_path):
    img = sitk.ReadImage(str(images / f"{CASE_B}_0000.nii.gz"))
    series = sitk.JoinSeries([img, img])  # a 4D image (two time points) where a 3D one belongs
    sitk.WriteImage(series, str(images / f"{CASE_B}_0000.nii.gz"))
    prompts = tmp_path / "p.txt"
    prompts.write_text("ball\n", encoding="utf-8")
    out = tmp_path / "out"
    res = predict(toy_dataset, trained_model, nnunet_env, images, out, prompts, check=False)
    assert res.returncode == 2, res.stderr[-2000:]
    assert f"nnUNetv2_text_predict: error: case '{CASE_B}'" in res.stderr and "a 3D image is expected" in res.stderr
    assert "Traceback" not in res.stderr and not out.exists()


def _write(path, size=(8, 9, 10), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)):
    img = sitk.GetImageFromArray(np.zeros(size[::-1], np.float32))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    sitk.WriteImage(img, str(path))
    return str(path)


@pytest.mark.parametrize("other, what", [(dict(size=(8, 9, 11)), "size"), (dict(spacing=(1.0, 1.0, 2.0)), "spacing"),
                                         (dict(origin=(0.0, 5.0, 0.0)), "origin")])
def test_channels_of_one_case_must_share_geometry(tmp_path, other, what):
    files = [_write(tmp_path / "c_0000.nii.gz"), _write(tmp_path / "c_0001.nii.gz", **other)]
    with pytest.raises(InputError, match=f"case 'c': channel c_0001.nii.gz differs from c_0000.nii.gz in {what}"):
        check_case_images("c", files)
    check_case_images("c", files[:1] + [_write(tmp_path / "c_0002.nii.gz")])  # identical geometry passes


def test_nnunet_flag_spellings_and_aliases():
    base = ["-i", "in", "-o", "out", "--prompts", "p.txt", "-d", "1", "-c", "3d_fullres"]
    a = build_parser().parse_args(base + ["-step_size", "0.25", "-num_parts", "4", "-part_id", "3", "--c",
                                          "--disable_progress_bar", "--verbose", "--not_on_device"])
    b = build_parser().parse_args(base + ["--step_size", "0.25", "--num_parts", "4", "--part_id", "3",
                                          "--continue_prediction"])
    for args in (a, b):
        assert (args.step_size, args.num_parts, args.part_id, args.continue_prediction) == (0.25, 4, 3, True)
    assert a.disable_progress_bar and a.verbose and a.not_on_device


def test_equivalent_command_keeps_the_users_arguments():
    line = equivalent_text_predict_command(["-i", "my images", "-o", "out", "-d", "990", "-c", "3d_fullres", "-tr",
                                            "TextFusionTrainer", "-prev_stage_predictions", "prev", "-step_size", "0.5"])
    assert line == ("nnUNetv2_text_predict -i 'my images' -o out -d 990 -c 3d_fullres -tr TextFusionTrainer "
                    "-step_size 0.5 --prompts prompts.txt")
    assert build_parser().parse_args(__import__("shlex").split(line)[1:]).step_size == 0.5  # our parser takes it


def test_nnunet_predict_on_a_text_model_names_the_text_command(toy_dataset, trained_model, nnunet_env, images,
                                                                tmp_path):
    out = tmp_path / "out"
    args = ["-i", str(images), "-o", str(out), "-d", str(toy_dataset["id"]), "-c", "3d_fullres", "-f", "0", "-tr",
            trained_model["trainer"], "-p", trained_model["plans"], "-device", "cpu"]
    res = run_cli([cli("nnUNetv2_predict"), *args], nnunet_env, check=False)
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    assert "nnUNetv2_predict: error: TextFusionTrainer_demo is a text-promptable model" in res.stderr
    assert equivalent_text_predict_command(args) in res.stderr
    assert not out.exists() or not any(out.rglob("*.nii.gz"))


def test_prompt_file_formats_and_unique_slugs():
    spec = parse_prompt_text("left kidney\n\nLiver\n", "p.txt")
    assert spec.prompts_for("any") == ["left kidney", "Liver"]
    spec = parse_prompt_text(json.dumps({"prompts": ["a"], "cases": {"c1": ["b", "a"]}}), "p.json")
    assert spec.prompts_for("c1") == ["a", "b"] and spec.prompts_for("c2") == ["a"]
    with pytest.raises(PromptFileError, match="no prompt for case 'c2'"):
        parse_prompt_text(json.dumps({"cases": {"c1": ["b"]}}), "p.json").check_cases(["c1", "c2"])
    slugs = unique_slugs(["Left kidney", "left-kidney", "left kidney!", "???"])
    assert list(slugs.values()) == ["left_kidney", "left_kidney_2", "left_kidney_3", "prompt"]
