"""Language robustness on the toy model the suite trains: every answer says what it understood, prompts
that name nothing learned come back empty, and an unknown prompt can be refused before any output."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import CASE_B, predict_args, run_cli
from nnunetv2_text.evaluation.metrics import dice
from nnunetv2_text.inference.api import TextSegmenter
from nnunetv2_text.inference.export import FLAG_NOT_FOUND, UNDERSTOOD_KEYS, UNKNOWN_FLAGS

HELD_OUT = json.loads((Path(__file__).parents[1] / "benchmarks" / "robustness_prompts.json").read_text())
MAIN = {"ball": 1, "box": 2, "rod": 3}


def read(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_manifest_records_nearest_concept_similarity_and_presence(predictions, trained_model):
    pool = json.loads((trained_model["folder"] / "text" / "foreign_prompts.json").read_text())["prompts"]
    ckpt = torch.load(trained_model["folder"] / "fold_0" / "checkpoint_final.pth", map_location="cpu",
                      weights_only=False)
    assert ckpt["text"]["foreign"] == pool  # the predictor compares prompts with the pool training saw
    pool = set(pool)
    for case, prompts in predictions["manifest"]["cases"].items():
        for prompt, rec in prompts.items():
            u = rec["understood"]
            assert set(u) == set(UNDERSTOOD_KEYS) and 0.0 <= rec["presence"] <= 1.0
            # how far the prompt stands from the phrases taught to give nothing, and which one is nearest
            assert u["foreign_term"] in pool and abs(u["margin"] - (u["similarity"] - u["foreign_similarity"])) < 2e-4
            # no empty mask goes unexplained: the manifest flags it (not found, or an unknown prompt)
            assert rec["voxels"] > 0 or rec["flag"] in (FLAG_NOT_FOUND, *UNKNOWN_FLAGS), \
                (case, prompt, rec)
        # vocabulary terms are understood as themselves, and are known
        assert prompts["sphere"]["understood"]["concept"] == "ball"
        assert prompts["sphere"]["understood"]["similarity"] == 1.0
        assert prompts["sphere"]["flag"] == (None if prompts["sphere"]["voxels"] else FLAG_NOT_FOUND)
        assert prompts["the cubic object"]["understood"]["concept"] == "box"
    assert predictions["manifest"]["model"]["on_unknown"] == "warn"
    assert {"min_similarity", "min_margin"} <= set(predictions["manifest"]["model"])


@pytest.mark.parametrize("threshold, why", [(("--min_similarity", "0.99"), "< 0.99"),
                                            (("--min_margin", "0.95"), "taught to answer with nothing")])
def test_unknown_prompt_is_refused_before_anything_is_written(toy_dataset, trained_model, nnunet_env, tmp_path,
                                                             threshold, why):
    prompts = tmp_path / "p.txt"
    prompts.write_text("ball\nthe long stick\n", encoding="utf-8")
    out = tmp_path / "out"
    res = run_cli(predict_args(toy_dataset, trained_model, toy_dataset["raw"] / "imagesTs", out, prompts,
                               "--on_unknown", "error", *threshold), nnunet_env, check=False)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "prompt 'the long stick' names nothing the model learned" in res.stderr and why in res.stderr
    assert f"lower {threshold[0]}" in res.stderr
    assert "concept 'rod'" in res.stderr and str(prompts) in res.stderr and "Traceback" not in res.stderr
    assert not out.exists()


def test_empty_mode_writes_empty_flagged_masks(trained_model, toy_dataset):
    seg = TextSegmenter(trained_model["folder"], folds=(0,), device="cpu")
    image = toy_dataset["raw"] / "imagesTs" / f"{CASE_B}_0000.nii.gz"
    masks, info = seg.predict(image, ["rod", "the long stick"], return_info=True, on_unknown="empty",
                              min_similarity=0.99)
    assert info["the long stick"]["flag"] == "unknown_prompt_emptied" and masks["the long stick"].sum() == 0
    assert info["rod"]["flag"] is None and masks["rod"].sum() > 0 and info["rod"]["concept"] == "rod"


def test_foreign_prompts_give_empty_masks_and_main_terms_still_work(trained_model, toy_dataset):
    """Foreign prompts the training never saw (the held-out list): at most 1 % of the smallest object's
    volume on at least 90 % of (case, prompt), with ``on_unknown="empty"``: the network's learned "not
    here" plus the similarity gate for prompts it does not recognise (benchmarks/robustness.py reports
    the two apart). Main terms keep Dice > 0.8."""
    seg = TextSegmenter(trained_model["folder"], folds=(0,), device="cpu")
    foreign = HELD_OUT["foreign"]
    empty, total, worst = 0, 0, []
    for img in sorted((toy_dataset["raw"] / "imagesTs").glob("*_0000.nii.gz")):
        ref = read(toy_dataset["raw"] / "labelsTs" / img.name.replace("_0000", ""))
        smallest = min(int((ref == v).sum()) for v in MAIN.values() if (ref == v).any())
        masks, info = seg.predict(img, list(MAIN) + foreign, return_info=True, on_unknown="empty")
        for name, label in MAIN.items():
            if (ref == label).any():
                assert dice(masks[name] > 0, ref == label) > 0.8, (img.name, name)
        for p in foreign:
            total += 1
            empty += int(masks[p].sum() <= 0.01 * smallest)
            worst.append((int(masks[p].sum()), info[p]["similarity"], p))
    assert empty / total >= 0.9, (empty, total, sorted(worst)[-8:])


#: share of (case, foreign prompt) the network empties by itself, the unknown-prompt rule switched off: 22.5 % and
#: 33 % in the two trainings docs/results/robustness.md reports under today's default (10.6 % without foreign
#: prompts); 15 % leaves a margin for the spread between trainings and still fails a network that never learned
#: "not here"
MIN_NETWORK_EMPTY = 0.15


def test_the_network_itself_empties_foreign_prompts(trained_model, toy_dataset):
    """The network's own "not here", apart from the similarity and margin rule (switched off: nothing is
    flagged or blanked), so that the test above cannot pass on the rule alone."""
    seg = TextSegmenter(trained_model["folder"], folds=(0,), device="cpu")
    empty, total = 0, 0
    for img in sorted((toy_dataset["raw"] / "imagesTs").glob("*_0000.nii.gz")):
        ref = read(toy_dataset["raw"] / "labelsTs" / img.name.replace("_0000", ""))
        smallest = min(int((ref == v).sum()) for v in MAIN.values() if (ref == v).any())
        masks, info = seg.predict(img, HELD_OUT["foreign"], return_info=True, on_unknown="warn",
                                  min_similarity=-1.0, min_margin=-2.0, wording="as_written")
        assert not any(i["flag"] in UNKNOWN_FLAGS for i in info.values())  # the rule is off
        empty += sum(int(m.sum() <= 0.01 * smallest) for m in masks.values())
        total += len(masks)
    assert empty / total >= MIN_NETWORK_EMPTY, (empty, total)


def test_nearest_term_wording_answers_as_the_understood_term(trained_model, toy_dataset):
    """``wording="nearest_term"`` (the default): a known paraphrase gets exactly the mask of the training
    term it was understood as; written as is, the network reads the paraphrase itself (another answer)."""
    seg = TextSegmenter(trained_model["folder"], folds=(0,), device="cpu")
    image = toy_dataset["raw"] / "imagesTs" / f"{CASE_B}_0000.nii.gz"
    paraphrase = "a brick-like block"
    masks, info = seg.predict(image, [paraphrase], return_info=True, wording="nearest_term")
    term = info[paraphrase]["term"]
    assert info[paraphrase]["concept"] == "box" and info[paraphrase]["flag"] is None and term != paraphrase
    as_term = seg.predict(image, [term], return_probabilities=True)[term]
    nearest = seg.predict(image, [paraphrase], return_probabilities=True)[paraphrase]
    as_written = seg.predict(image, [paraphrase], return_probabilities=True, wording="as_written")[paraphrase]
    assert np.array_equal(nearest, as_term)
    assert not np.array_equal(as_written, as_term)  # the swap changed what the network saw
    assert masks[paraphrase].sum() > 0
