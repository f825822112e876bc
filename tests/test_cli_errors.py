"""Every command reports a user's mistake the same way: ``<prog>: error: ...``, exit code 2, no traceback;
anything else is a bug and keeps its traceback."""
from __future__ import annotations

import subprocess

import pytest

from conftest import cli
from nnunetv2_text.errors import UserInputError
from nnunetv2_text.run.cli import user_errors_to_exit


def test_user_errors_become_exit_2_and_bugs_propagate(capsys):
    @user_errors_to_exit("prog")
    def bad_input(argv=None):
        raise UserInputError("case 'c1': image.nii.gz is broken")

    @user_errors_to_exit("prog")
    def bug(argv=None):
        raise ValueError("internal")

    assert bad_input([]) == 2
    assert capsys.readouterr().err == "prog: error: case 'c1': image.nii.gz is broken\n"
    with pytest.raises(ValueError, match="internal"):
        bug([])


@pytest.mark.parametrize("prog, args, message", [
    ("nnUNetv2_text_embed", ["-d", "987"], "987"),
    ("nnUNetv2_text_evaluate", ["-p", "missing_pred", "-r", "missing_ref", "-o", "out"], "--vocab is required"),
    ("nnUNetv2_text_predict", ["-i", "in", "-o", "out", "--prompts", "missing_prompts.txt", "-d", "1", "-c",
                               "3d_fullres"], "missing_prompts.txt: prompt file not found"),
    ("nnUNetv2_text_predict", ["-i", "in", "-o", "out", "--prompts", "{p}", "-c", "3d_fullres"],
     "give the model with -d"),
    ("nnUNetv2_text_predict", ["-i", "in", "-o", "out", "--prompts", "{p}", "-d", "1", "-c", "3d_fullres",
                               "-num_parts", "2", "-part_id", "2"], "-part_id must be in [0, 1]"),
    ("nnUNetv2_text_convert_cowtalk", ["-i", "no_such_topcow", "-d", "1000"], "outside 1..999"),
    ("nnUNetv2_text_convert_mni152", ["-d", "0", "-o", "{tmp}"], "dataset_id"),
])
def test_commands_print_user_errors_like_argparse(prog, args, message, tmp_path, monkeypatch):
    prompts = tmp_path / "p.txt"
    prompts.write_text("ball\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "res"))
    args = [a.format(p=prompts, tmp=tmp_path) for a in args]
    res = subprocess.run([cli(prog), *args], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    assert f"{prog}: error: " in res.stderr and message in res.stderr, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
