"""Segment everything: ``--prompts all`` (every single-label concept by its main term) and ``--save_combined``
(one nnU-Net-style label map per case), on the shared toy model through the real command."""
import json

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import cli, predict_args, run_cli
from nnunetv2_text.errors import UserInputError
from nnunetv2_text.inference.export import combine_masks
from nnunetv2_text.inference.plan import expand_all
from nnunetv2_text.text.vocabulary import load_vocabulary, resolve_vocabulary_path

MAINS = ["ball", "box", "rod"]  # the toy's single-label concepts, in vocabulary order


def _read(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.fixture(scope="module")
def everything(toy_dataset, trained_model, nnunet_env, tmp_path_factory):
    """The held-out cases predicted with --prompts all --save_combined, and with the concepts listed."""
    base = tmp_path_factory.mktemp("everything")
    listed = base / "listed.txt"
    listed.write_text("\n".join(MAINS) + "\n")
    out = {}
    for name, prompts, extra in (("all", "all", ["--save_combined", "--save_probabilities"]),
                                 ("listed", listed, []),
                                 ("mixed", base / "mixed.txt", [])):
        if name == "mixed":
            prompts.write_text("the cubic object\nall\nall shapes\n")
        folder = base / name
        run_cli(predict_args(toy_dataset, trained_model, toy_dataset["raw"] / "imagesTs", folder, prompts, *extra),
                nnunet_env)
        out[name] = (folder, json.loads((folder / "manifest.json").read_text()))
    return out


def test_all_gives_the_masks_of_every_concept_listed(everything):
    (all_dir, all_m), (list_dir, list_m) = everything["all"], everything["listed"]
    assert set(all_m["cases"]) == set(list_m["cases"]) and len(all_m["cases"]) == 3
    for case, recs in all_m["cases"].items():
        assert list(recs) == MAINS == list(list_m["cases"][case])
        for p in MAINS:
            np.testing.assert_array_equal(_read(all_dir / recs[p]["file"]),
                                          _read(list_dir / list_m["cases"][case][p]["file"]))


def test_all_together_with_other_prompts(everything):
    (mixed_dir, mixed_m), (list_dir, list_m) = everything["mixed"], everything["listed"]
    for case, recs in mixed_m["cases"].items():
        assert list(recs) == ["the cubic object", *MAINS, "all shapes"]
        np.testing.assert_array_equal(_read(mixed_dir / recs["rod"]["file"]),
                                      _read(list_dir / list_m["cases"][case]["rod"]["file"]))


def test_combined_map_is_the_argmax_of_the_claimed_probabilities(everything, toy_dataset):
    folder, manifest = everything["all"]
    labels = json.loads((toy_dataset["raw"] / "dataset.json").read_text())["labels"]
    assert manifest["combined"]["labels"] == labels  # the training dataset.json's table, names and values
    seen = set()
    for case, recs in manifest["cases"].items():
        combined_file = folder / manifest["combined"]["files"][case]
        assert combined_file.name == f"{case}.nii.gz"
        combined = _read(combined_file)
        masks = np.stack([_read(folder / recs[p]["file"]) for p in MAINS]).astype(bool)
        probs = np.stack([np.load(folder / recs[p]["probabilities"])["probabilities"] for p in MAINS])
        # the rule, written out: a voxel claimed by no mask is background, else the claimant of highest probability
        score = np.where(masks, probs.astype(np.float32), -1.0)
        expected = np.where(masks.any(0), np.array([labels[p] for p in MAINS])[score.argmax(0)], 0)
        np.testing.assert_array_equal(combined, expected)
        ref = sitk.ReadImage(str(toy_dataset["raw"] / "imagesTs" / f"{case}_0000.nii.gz"))
        img = sitk.ReadImage(str(combined_file))
        assert img.GetSize() == ref.GetSize() and np.allclose(img.GetDirection(), ref.GetDirection())
        seen |= set(np.unique(combined).tolist())
    assert seen == {0, 1, 2, 3}  # every structure somewhere: the map is not trivially empty


def test_combine_masks_keeps_the_more_probable_claim():
    masks = np.array([[1, 1, 0, 0], [0, 1, 1, 0]], np.uint8)
    probs = np.array([[0.9, 0.6, 0.1, 0.2], [0.2, 0.7, 0.8, 0.3]], np.float16)
    np.testing.assert_array_equal(combine_masks(masks, probs, {0: 5, 1: 7}), [5, 7, 7, 0])
    np.testing.assert_array_equal(combine_masks(masks, probs, {0: 5}), [5, 5, 0, 0])


def test_all_needs_single_label_concepts():
    vocab = load_vocabulary(resolve_vocabulary_path("toy_shapes"), {"background": 0, "ball": 1, "box": 2, "rod": 3})
    assert expand_all(["the box", "ALL", "ball"], vocab) == ["the box", "ball", "box", "rod"]
    assert expand_all(["ball"], None) == ["ball"]
    with pytest.raises(UserInputError, match="'all'"):
        expand_all(["all"], None)  # an imported open-vocabulary model has no concepts to list


def test_save_combined_with_instructions_is_refused_before_anything_is_written(tmp_path):
    one = tmp_path / "one.txt"
    one.write_text("Thin the basilar artery.")
    out = tmp_path / "out"
    res = run_cli([cli("nnUNetv2_text_predict"), "-i", str(tmp_path), "-o", str(out), "--instructions", str(one),
                   "-m", str(tmp_path / "no_model"), "--save_combined"], check=False)
    assert res.returncode == 2 and "--save_combined" in res.stderr and not out.exists()


def test_a_checkpoint_keeps_the_decoder_it_was_trained_with(trained_model, every_stage_model, toy_dataset, tmp_path):
    """The default decoder for new trainings changed (issue #25): the demo, trained like every new model, stores
    the shared decoder. A checkpoint of today's design keeps it, whether its config names ``shared_decoder:
    false`` or was written before the key existed: both build every stage per prompt from the same weights and
    predict bit-identically."""
    import shutil

    import torch

    from nnunetv2_text.inference.api import TextSegmenter

    saved = torch.load(trained_model["folder"] / "fold_0" / "checkpoint_final.pth", map_location="cpu",
                       weights_only=False)["text"]["network_config"]
    assert saved["shared_decoder"] is True
    ckpt = every_stage_model["checkpoint"]
    folders = {"explicit": every_stage_model["folder"], "before_the_key": tmp_path / "before_the_key"}
    shutil.copytree(folders["explicit"], folders["before_the_key"])
    ckpt = {**ckpt, "text": {**ckpt["text"], "network_config": {
        k: v for k, v in ckpt["text"]["network_config"].items() if k != "shared_decoder"}}}
    torch.save(ckpt, folders["before_the_key"] / "fold_0" / "checkpoint_final.pth")
    image = sorted((toy_dataset["raw"] / "imagesTs").glob("*_0000.nii.gz"))[0]
    prompts = ["ball", "rod", "cube"]
    answers = {}
    for name, folder in folders.items():
        segmenter = TextSegmenter(folder, folds=(0,), device="cpu", prompt_batch_size=1)
        assert not segmenter.predictor.network_config.shared_decoder
        answers[name] = segmenter.predict(image, prompts, return_probabilities=True)
    for q in prompts:
        assert np.array_equal(answers["explicit"][q], answers["before_the_key"][q]), q
