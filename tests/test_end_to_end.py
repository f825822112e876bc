"""The real commands on the toy dataset: plan, embed, train (encoder unimportable), validate, predict.

The toy images hold a ball, a box and (in two of three cases) a rod, all visible at once; only the
prompt says which to segment. The session fixtures in conftest.py train one small model for all tests.
"""
from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk
import torch

from conftest import CASE_A, CASE_B
from nnunetv2_text.evaluation.metrics import dice
from nnunetv2_text.inference.api import TextSegmenter
from nnunetv2_text.inference.predictor import TextPredictor
from nnunetv2_text.text.cache import EmbeddingCache

POSITIVE = {"ball": [1], "box": [2], "rod": [3], "sphere": [1], "the cubic object": [2], "all shapes": [1, 2, 3]}


def read(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_planning_used_resenc_and_embedding_cache_exists(toy_dataset):
    plans = json.loads((toy_dataset["preprocessed"] / "nnUNetResEncUNetMPlans.json").read_text())
    arch = plans["configurations"]["3d_fullres"]["architecture"]
    assert arch["network_class_name"].endswith("ResidualEncoderUNet")
    # the toy's intensity bands are absolute: dataset-wide (CT) normalisation, not per-image z-scores
    assert plans["configurations"]["3d_fullres"]["normalization_schemes"] == ["CTNormalization"]
    text = toy_dataset["preprocessed"] / "text"
    assert {p.name for p in text.iterdir()} >= {"embeddings.safetensors", "vocabulary.json", "encoder.json"}


def test_training_checkpoint_records_text_and_never_mirrors_left_right(trained_model):
    ckpt = torch.load(trained_model["folder"] / "fold_0" / "checkpoint_final.pth", map_location="cpu",
                      weights_only=False)
    text = ckpt["text"]
    assert text["model_id"] == "sentence-transformers/all-MiniLM-L6-v2" and text["embedding_dim"] == 384
    assert len(text["vocabulary_sha256"]) == 64 and text["network_config"]["text_dim"] == 384
    assert ckpt["trainer_name"] == "TextFusionTrainer_demo"
    # toy images have an identity direction: left-right is sitk x, the last array axis
    assert text["left_right_axis"] == 2 and 2 not in ckpt["inference_allowed_mirroring_axes"]
    # prompts are centred on the mean of the vocabulary's cached embeddings, saved with the weights
    terms = sorted({t for c in text["vocabulary"]["concepts"] for t in [c["main"], *c["synonyms"]]})
    vectors = EmbeddingCache(trained_model["folder"] / "text" / "embeddings.safetensors").get(
        text["model_id"], text["instruction"], terms)
    center = ckpt["network_weights"]["prompt_decoder.text_center"].numpy()
    np.testing.assert_allclose(center, vectors.mean(0), atol=1e-5)
    assert np.linalg.norm(center) > 0.1
    summary = json.loads((trained_model["folder"] / "fold_0" / "validation" / "summary.json").read_text())
    assert set(summary["per_concept"]) == {"ball", "box", "rod"}


def test_learned_prompts_segment_what_they_name(predictions, toy_dataset):
    manifest = predictions["manifest"]
    labels = toy_dataset["raw"] / "labelsTs"
    scores = {}
    for case, prompts in manifest["cases"].items():
        ref = read(labels / f"{case}.nii.gz")
        for prompt, rec in prompts.items():
            gt = np.isin(ref, POSITIVE[prompt])
            pred = read(predictions["folder"] / rec["file"]) > 0
            if gt.any():
                scores.setdefault(prompt, []).append(dice(pred, gt))
            else:  # negative prompt (no rod in this case): an (almost) empty mask
                assert pred.sum() < 0.05 * np.isin(ref, [1, 2]).sum() / 2, (case, prompt, int(pred.sum()))
    for prompt in ("ball", "box", "rod", "sphere"):
        assert np.mean(scores[prompt]) > 0.8, (prompt, scores[prompt])


def test_swapping_prompts_swaps_the_masks(trained_model, toy_dataset):
    seg = TextSegmenter(trained_model["folder"], folds=(0,), device="cpu")
    image = toy_dataset["raw"] / "imagesTs" / f"{CASE_A}_0000.nii.gz"
    ref = read(toy_dataset["raw"] / "labelsTs" / f"{CASE_A}.nii.gz")
    ab = seg.predict(image, ["ball", "box"])
    ba = seg.predict(image, ["box", "ball"])
    assert dice(ab["ball"] > 0, ref == 1) > 0.8 and dice(ab["box"] > 0, ref == 2) > 0.8
    assert dice(ab["ball"] > 0, ref == 2) < 0.2  # the text, not the image, picks the structure
    np.testing.assert_array_equal(ab["ball"], ba["ball"])
    # at network level: the same tile, text rows swapped -> output channels swapped
    p = seg.predictor
    emb = p.embed_prompts(["ball", "box"])
    x = torch.randn(1, 1, *p.configuration_manager.patch_size)
    with torch.no_grad():
        out = p.network(x, torch.from_numpy(emb)[None])
        out_sw = p.network(x, torch.from_numpy(emb[[1, 0]])[None])
    torch.testing.assert_close(out_sw, out[:, [1, 0]])


def test_prediction_geometry_and_manifest(predictions, toy_dataset):
    manifest = predictions["manifest"]
    cases = sorted(p.name[:-12] for p in (toy_dataset["raw"] / "imagesTs").glob("*_0000.nii.gz"))
    assert sorted(manifest["cases"]) == cases
    for case in cases:
        assert list(manifest["cases"][case]) == list(POSITIVE)  # every (case, prompt), in file order
        src = sitk.ReadImage(str(toy_dataset["raw"] / "imagesTs" / f"{case}_0000.nii.gz"))
        for prompt, rec in manifest["cases"][case].items():
            out = sitk.ReadImage(str(predictions["folder"] / rec["file"]))
            assert out.GetSize() == src.GetSize()
            np.testing.assert_allclose(out.GetSpacing(), src.GetSpacing())
            np.testing.assert_allclose(out.GetOrigin(), src.GetOrigin())
            np.testing.assert_allclose(out.GetDirection(), src.GetDirection())
            arr = sitk.GetArrayFromImage(out)
            assert set(np.unique(arr)) <= {0, 1} and rec["voxels"] == int(arr.sum())
            assert abs(rec["volume_ml"] - arr.sum() * np.prod(src.GetSpacing()) / 1000) < 1e-3
    assert src.GetDirection() != (1, 0, 0, 0, 1, 0, 0, 0, 1) and len(set(src.GetSpacing())) == 3


def test_predictor_refuses_checkpoint_of_plain_nnunet(tmp_path, trained_model):
    import shutil
    folder = tmp_path / "model"
    shutil.copytree(trained_model["folder"], folder)
    ckpt = torch.load(folder / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    del ckpt["text"]
    torch.save(ckpt, folder / "fold_0" / "checkpoint_final.pth")
    p = TextPredictor(device=torch.device("cpu"))
    try:
        p.initialize_from_trained_model_folder(str(folder), (0,))
    except ValueError as e:
        assert "not a text model checkpoint" in str(e)
    else:
        raise AssertionError("a checkpoint without text entry was accepted")


def test_prompt_batches_do_not_change_the_result(every_stage_model, toy_dataset):
    """Decoding prompts one at a time or all together from one encoder pass gives the same logits (on a decoder
    run per prompt: the shared decoder never chunks)."""
    image = toy_dataset["raw"] / "imagesTs" / f"{CASE_B}_0000.nii.gz"
    prompts = ["ball", "rod", "cube", "all shapes"]
    folder = every_stage_model["folder"]
    one = TextSegmenter(folder, folds=(0,), device="cpu", prompt_batch_size=1)
    many = TextSegmenter(folder, folds=(0,), device="cpu", prompt_batch_size=16)
    auto = TextSegmenter(folder, folds=(0,), device="cpu")  # chunk measured on the first tile
    a = one.predict(image, prompts, return_probabilities=True)
    b = many.predict(image, prompts, return_probabilities=True)
    c = auto.predict(image, prompts, return_probabilities=True)
    for q in prompts:
        np.testing.assert_allclose(a[q].astype(np.float32), b[q].astype(np.float32), atol=2e-3)
        np.testing.assert_allclose(a[q].astype(np.float32), c[q].astype(np.float32), atol=2e-3)
    assert 1 in auto.predictor.chunk_timings


def test_the_chunk_size_is_the_fastest_measured(every_stage_model):
    """While a tile's prompts decode, chunks of 1, 2, 4, ... prompts are timed; the rest decode with the
    fastest per prompt (the smaller on a tie), sizes stop growing at the first that loses, the choice is kept
    once concluded, and the logits are those of one batch."""
    import torch

    from nnunetv2_text.inference.predictor import CHUNK_TIE

    seg = TextSegmenter(every_stage_model["folder"], folds=(0,), device="cpu")
    p = seg.predictor
    torch.manual_seed(0)
    x = torch.randn(1, 1, *p.configuration_manager.patch_size)
    p.set_prompts(torch.randn(40, p.network_config.text_dim))
    with torch.inference_mode():
        skips = p.network.encode(x)
        chunked = p._decode_all(skips, x)
        whole = p.network.decode(skips, p._text, x)
    torch.testing.assert_close(chunked, whole, atol=5e-3, rtol=1e-3)
    times, best, tie = p.chunk_timings, p.chunk_choice, 1 + CHUNK_TIE
    assert set(times) <= {1, 2, 4, 8, 16, 32} and times[best] <= tie * min(times.values()), times
    assert all(times[k] > tie * min(times.values()) for k in times if k < best), times  # ties go to the smaller
    assert max(times) <= 2 * best, times  # no size measured past the first that would not be chosen
    assert p.prompt_batch_size in (0, p.chunk_choice)  # kept for good once concluded


def test_the_shared_decoder_decodes_every_prompt_in_one_call(trained_model):
    """The default decoder runs its stages once per tile whatever the prompts: chunks would run them again,
    so all prompts are read out in one call and nothing is timed (issue #25)."""
    import torch

    seg = TextSegmenter(trained_model["folder"], folds=(0,), device="cpu")
    p = seg.predictor
    assert p.network_config.shared_decoder
    torch.manual_seed(0)
    x = torch.randn(1, 1, *p.configuration_manager.patch_size)
    p.set_prompts(torch.randn(40, p.network_config.text_dim))
    calls = []
    decode = p.network.decode
    p.network.decode = lambda *a, **k: calls.append(1) or decode(*a, **k)
    with torch.inference_mode():
        out = p._decode_all(p.network.encode(x), x)
    assert len(calls) == 1 and out.shape[1] == 40 * p.network_config.outputs_per_prompt
    assert p.chunk_timings == {} and p.prompt_batch_size == 0


def test_training_case_without_foreground_is_named(toy_dataset, tmp_path):
    """nnU-Net's preprocessing records each case's label locations; a case without any stops training."""
    import pytest
    from batchgenerators.utilities.file_and_folder_operations import load_pickle, save_pickle

    from nnunetv2_text.training.base import check_cases_have_foreground

    src = toy_dataset["preprocessed"] / "nnUNetPlans_3d_fullres"
    props = load_pickle(str(src / "toy_000.pkl"))
    check_cases_have_foreground(str(src), ["toy_000", "toy_001"])
    props["class_locations"] = {k: v[:0] for k, v in props["class_locations"].items()}
    save_pickle(props, str(tmp_path / "toy_000.pkl"))
    with pytest.raises(RuntimeError, match="training case 'toy_000' has no foreground voxel"):
        check_cases_have_foreground(str(tmp_path), ["toy_000"])


def test_the_command_equals_the_steps_composed_by_hand(predictions, trained_model, toy_dataset):
    """Bit for bit: the command's masks (one PromptPlan per run, export from a CasePrompts) equal those of
    the predictor's steps written out one by one, as the prediction code ran them before the plan existed:
    embed, understand, reword to the nearest term, predict the case, threshold, write. A refactoring of the
    prediction path that changes any mask fails here."""
    from nnunetv2_text.inference.export import logits_to_masks
    from nnunetv2_text.inference.prompt_file import DEFAULT_MIN_MARGIN, DEFAULT_MIN_SIMILARITY
    from nnunetv2_text.utils.orientation import to_storage_layout

    p = TextPredictor(device=torch.device("cpu"), perform_everything_on_device=False, allow_tqdm=False)
    p.initialize_from_trained_model_folder(str(trained_model["folder"]), (0,), "checkpoint_final.pth")
    prompts = list(POSITIVE)
    emb = p.embed_prompts(prompts)
    understood = p.understand(prompts, emb, DEFAULT_MIN_SIMILARITY, min_margin=DEFAULT_MIN_MARGIN)
    emb = p.reword(prompts, emb, understood, "nearest_term")
    pre = p.configuration_manager.preprocessor_class(verbose=False)
    for case, recs in predictions["manifest"]["cases"].items():
        files = [str(toy_dataset["raw"] / "imagesTs" / f"{case}_0000.nii.gz")]
        data, props = p.plans_manager.image_reader_writer_class().read_images(files)
        data, _, props = pre.run_case_npy(data, None, props, p.plans_manager, p.configuration_manager,
                                          p.dataset_json)
        logits = p.predict_case_logits(torch.from_numpy(data).float(), emb)
        masks, _ = logits_to_masks(logits, props, p.plans_manager, p.configuration_manager)
        for i, prompt in enumerate(prompts):
            written = read(predictions["folder"] / recs[prompt]["file"])
            np.testing.assert_array_equal(written, to_storage_layout(masks[i], props), err_msg=f"{case} {prompt}")
            assert recs[prompt]["understood"]["concept"] == understood[prompt]["concept"]
