"""nnUNetv2_text_merge on tiny partially labelled toy datasets: ids, label values, links, the sources
file, every refused input (named, with nothing written), and the partial-label prompt sampling."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from dataset_conversion.merge import main, merge_datasets
from nnunetv2_text.demo.toy import write_partial_toy_source
from nnunetv2_text.errors import UserInputError
from nnunetv2_text.text.sources import load_sources
from nnunetv2_text.text.vocabulary import load_vocabulary
from nnunetv2_text.training.prompts import PromptSampler


@pytest.fixture()
def raw(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_raw", str(tmp_path))
    write_partial_toy_source(tmp_path, 801, "ToyA", ["ball", "box"], num_cases=3, seed=1)
    write_partial_toy_source(tmp_path, 802, "ToyB", ["box", "rod"], num_cases=3, seed=2)
    return tmp_path


def labels(path):
    return set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).tolist())


def nothing_written(raw: Path, target: int = 803) -> bool:
    return not list(raw.glob(f"Dataset{target}_*")) and not [p for p in raw.iterdir() if p.name.startswith(".")]


def test_merge_ids_labels_links_and_sources(raw):
    out = merge_datasets(["801", "Dataset802_ToyB"], 803, "Both")
    assert out == raw / "Dataset803_Both"
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["labels"] == {"background": 0, "ball": 1, "box": 2, "rod": 3} and ds["numTraining"] == 6
    cases = sorted(p.name[:-12] for p in (out / "imagesTr").glob("*_0000.nii.gz"))
    assert cases == [f"ds801_toy_00{i}" for i in range(3)] + [f"ds802_toy_00{i}" for i in range(3)]
    # B labelled box as 1 and rod as 2: rewritten to the merged values; A's rod stays unlabelled background
    assert labels(raw / "Dataset802_ToyB" / "labelsTr" / "toy_000.nii.gz") <= {0, 1, 2}
    assert labels(out / "labelsTr" / "ds802_toy_000.nii.gz") <= {0, 2, 3}
    assert labels(out / "labelsTr" / "ds801_toy_000.nii.gz") <= {0, 1, 2}
    src_img = raw / "Dataset801_ToyA" / "imagesTr" / "toy_000_0000.nii.gz"
    assert os.path.samefile(out / "imagesTr" / "ds801_toy_000_0000.nii.gz", src_img)  # linked, not re-encoded
    lab = sitk.ReadImage(str(out / "labelsTr" / "ds802_toy_000.nii.gz"))
    assert lab.GetPixelID() == sitk.sitkUInt8
    assert lab.GetOrigin() == sitk.ReadImage(str(raw / "Dataset802_ToyB" / "labelsTr" / "toy_000.nii.gz")).GetOrigin()
    sources = load_sources(out / "sources.json")
    assert sources.annotated("ds801_toy_001") == {"ball", "box"} and sources.annotated("ds802_toy_001") == {"box", "rod"}
    vocab = load_vocabulary(out / "vocabulary.json", dataset_labels=ds["labels"])
    assert [c.id for c in vocab.concepts] == ["ball", "box", "rod"] and vocab.lookup("cylinder").labels == (3,)


def test_copy_and_overwrite(raw):
    merge_datasets(["801", "802"], 803, "Both")
    with pytest.raises(UserInputError, match="already used by .*Dataset803_Both.*--overwrite"):
        merge_datasets(["801", "802"], 803, "Both")
    out = merge_datasets(["801", "802"], 803, "Other", copy=True, overwrite=True)
    assert not (raw / "Dataset803_Both").exists() and out.is_dir()
    assert not os.path.samefile(out / "imagesTr" / "ds801_toy_000_0000.nii.gz",
                                raw / "Dataset801_ToyA" / "imagesTr" / "toy_000_0000.nii.gz")


def _break(raw, what):
    a, b = raw / "Dataset801_ToyA", raw / "Dataset802_ToyB"
    if what == "no vocabulary":
        (b / "vocabulary.json").unlink()
        return "source Dataset802_ToyB: .*no vocabulary"
    if what == "uncovered label":
        ds = json.loads((b / "dataset.json").read_text())
        ds["labels"]["tumour"] = 3
        (b / "dataset.json").write_text(json.dumps(ds))
        return "source Dataset802_ToyB: .*tumour"
    if what == "channels":
        ds = json.loads((b / "dataset.json").read_text())
        ds["channel_names"] = {"0": "CT", "1": "CT"}
        (b / "dataset.json").write_text(json.dumps(ds))
        return "Dataset801_ToyA and Dataset802_ToyB have 1 and 2 input channels"
    if what == "normalisation":
        ds = json.loads((b / "dataset.json").read_text())
        ds["channel_names"] = {"0": "T1"}
        (b / "dataset.json").write_text(json.dumps(ds))
        return "name their channels differently.*--normalization zscore"
    if what == "undeclared value":
        f = b / "labelsTr" / "toy_001.nii.gz"
        img = sitk.ReadImage(str(f))
        arr = sitk.GetArrayFromImage(img)
        arr[0, 0, 0] = 7
        out = sitk.GetImageFromArray(arr)
        out.CopyInformation(img)
        sitk.WriteImage(out, str(f))
        return r"source Dataset802_ToyB: case 'toy_001' holds label value\(s\) \[7\]"
    if what == "term conflict":
        v = json.loads((b / "vocabulary.json").read_text())
        v["concepts"][1]["synonyms"].append("sphere")  # rod's synonym, but A's ball owns "sphere"
        (b / "vocabulary.json").write_text(json.dumps(v))
        return "term 'sphere' names concept 'ball' in source Dataset801_ToyA and concept 'rod' in source Dataset802_ToyB"
    raise AssertionError(what)


@pytest.mark.parametrize("what", ["no vocabulary", "uncovered label", "channels", "normalisation", "undeclared value",
                                  "term conflict"])
def test_bad_sources_are_named_and_nothing_is_written(raw, what):
    message = _break(raw, what)
    with pytest.raises(UserInputError, match=message):
        merge_datasets(["801", "802"], 803, "Both", num_processes=2 if what == "undeclared value" else 1)
    assert nothing_written(raw)


def test_same_source_twice_and_cli_errors(raw, capsys):
    with pytest.raises(UserInputError, match="source Dataset801_ToyA is given twice"):
        merge_datasets(["801", "Dataset801_ToyA"], 803)
    assert main(["-d", "801", "999", "-o", "803"]) == 2
    assert "nnUNetv2_text_merge: error: source dataset '999': not found" in capsys.readouterr().err
    assert nothing_written(raw)


def test_zscore_normalisation_merges_differently_named_channels(raw):
    _break(raw, "normalisation")
    out = merge_datasets(["801", "802"], 803, "Both", normalization="zscore")
    assert json.loads((out / "dataset.json").read_text())["channel_names"] == {"0": "zscore"}


def test_partial_labels_prompt_only_annotated_concepts():
    """A concept the sample's source does not annotate is never a prompt for it, not even a negative."""
    vocab = load_vocabulary(Path(__file__).parents[1] / "vocab" / "toy_shapes.json")
    terms = vocab.all_terms() + ["hello world"]
    sampler = PromptSampler(vocab, terms, 2, 1, seed=0, foreign=["hello world"])  # foreign only to fill
    seg = torch.zeros(2, 1, 4, 4, 4, dtype=torch.long)
    seg[:, :, 0] = 1  # ball present in both samples
    seg[:, :, 1] = 2  # box present
    annotated = [{1, 2}, {0, 1}]  # sample 0: box and rod; sample 1: ball and box
    for _ in range(50):
        pb = sampler.sample(seg, annotated)
        assert 0 not in pb.concept_ids[0].tolist()  # ball is in sample 0's patch but unlabelled there
        assert pb.concept_ids[0].tolist()[:2] == [1, 2] and pb.positive[0].tolist()[:2] == [True, False]
        # sample 1 has two present concepts and nothing annotated absent: the third slot repeats a present one
        assert set(pb.concept_ids[1].tolist()) == {0, 1} and pb.positive[1].tolist() == [True, True, True]
    full = sampler.sample(seg)  # no partial labels: every concept may be prompted
    assert full.concept_ids.shape == (2, 3)
