"""Overlay pictures: every found structure outlined in its colour where its mask is, the patient's left on
the viewer's right whatever the storage, empty prompts listed and not drawn; written by
``nnUNetv2_text_predict --save_overlays`` and, with the reference, by ``nnUNetv2_text_evaluate``."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image
from scipy import ndimage

from conftest import cli, predict_args, run_cli
from nnunetv2_text.demo.toy import TRAIN_CASES
from nnunetv2_text.evaluation.overlays import (REFERENCE_COLOUR, overlay_figure, patient_array, prompt_colours,
                                               view_slice, write_case_overlay, write_overlay)
from nnunetv2_text.utils.io import atomic_path

#: the third held-out toy case: ball and box, no rod
CASE_C = f"toy_{TRAIN_CASES + 2:03d}"
#: with NNUNETV2_TEXT_DOCS_IMAGES=1 the evaluated toy case's picture is copied here (docs/VIEWING.md shows it)
DOCS_IMAGE = Path(__file__).resolve().parents[1] / "docs" / "images" / "overlay_toy.png"


def read_png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def colour_hits(png: np.ndarray, panel, colour, shape) -> np.ndarray:
    """(row, col) indices of the panel's slice (of ``shape``) whose drawn pixels have exactly ``colour``."""
    left, top, right, bottom = panel.box
    ys, xs = np.nonzero((png[top:bottom, left:right] == np.array(colour, np.uint8)).all(-1))
    rows = np.clip((ys + 0.5) * shape[0] // (bottom - top), 0, shape[0] - 1).astype(int)
    cols = np.clip((xs + 0.5) * shape[1] // (right - left), 0, shape[1] - 1).astype(int)
    return np.stack([rows, cols], 1)


def assert_outlines_on_masks(png: np.ndarray, panels, masks: dict, colours: dict) -> None:
    """Each non-empty mask's colour appears in every panel of its row, and wherever its colour is drawn the
    mask is there (one voxel of slack for pixel rounding); an empty mask's colour appears nowhere."""
    for prompt, mask in masks.items():
        seen = 0
        for panel in panels:
            mask2d = view_slice(mask, panel.view, panel.index)
            hits = colour_hits(png, panel, colours[prompt], mask2d.shape)
            near = ndimage.binary_dilation(mask2d, iterations=1)
            assert near[hits[:, 0], hits[:, 1]].all(), f"'{prompt}' drawn off its mask in {panel}"
            if panel.prompt == prompt:
                assert len(hits), f"'{prompt}' not outlined in its own row's {panel.view} slice"
            seen += len(hits)
        assert (seen > 0) == bool(mask.any()), f"'{prompt}': {seen} pixels of its colour, mask voxels {mask.sum()}"


def _toy_image(direction_code: str):
    """A noisy image with a block on the patient's left and one anterior-right, stored as ``direction_code``."""
    rng = np.random.default_rng(0)
    arr = rng.normal(0, 0.1, (24, 30, 36)).astype(np.float32)  # LPS: z up, y to the back, x to the left
    left = np.zeros(arr.shape, np.uint8)
    left[8:16, 10:18, 26:33] = 1
    front_right = np.zeros(arr.shape, np.uint8)
    front_right[10:14, 2:7, 3:9] = 1
    arr += 2 * (left + front_right)
    images = []
    for a in (arr, left, front_right, np.zeros_like(left)):
        img = sitk.GetImageFromArray(a)
        img.SetSpacing((0.8, 1.0, 2.0))
        images.append(sitk.DICOMOrient(img, direction_code))
    return images


RECORDS = {"left block": {"voxels": 392, "understood": {"concept": "block_l", "term": "left block",
                                                        "similarity": 1.0, "side": "left"}, "flag": None},
           "front block": {"voxels": 120, "understood": {"concept": "block_f", "term": "front block",
                                                         "similarity": 0.81, "side": None}, "flag": "unknown_prompt"},
           "nothing": {"voxels": 0, "understood": {"concept": "rod", "term": "rod", "similarity": 0.9, "side": None},
                       "flag": "not_found"}}


def test_patient_left_on_viewers_right_whatever_the_storage(tmp_path):
    pngs = []
    for code in ("LPS", "RAS", "PIR"):
        image, left, front, empty = _toy_image(code)
        out = tmp_path / f"{code}.png"
        panels = write_overlay(out, image, {"left block": left, "front block": front, "nothing": empty}, RECORDS)
        png = read_png(out)
        colours = prompt_colours(list(RECORDS))
        assert_outlines_on_masks(png, panels, {p: patient_array(m)[0] > 0 for p, m in
                                               zip(RECORDS, (left, front, empty))}, colours)
        axial = next(p for p in panels if p.prompt == "left block" and p.view == "axial")
        cols = colour_hits(png, axial, colours["left block"], (30, 36))[:, 1]
        assert cols.min() > 36 / 2, "the patient's left block must be drawn on the viewer's right"
        axial_front = next(p for p in panels if p.prompt == "front block" and p.view == "axial")
        hits = colour_hits(png, axial_front, colours["front block"], (30, 36))
        assert hits[:, 0].max() < 30 / 2 and hits[:, 1].max() < 36 / 2, "anterior-right: top left of an axial slice"
        pngs.append(png)
    assert all(np.array_equal(pngs[0], p) for p in pngs[1:]), "the same patient stored three ways draws the same"


def test_empty_prompt_listed_not_drawn_and_reference_white(tmp_path):
    image, left, front, empty = _toy_image("LPS")
    arrays = {p: patient_array(m)[0] > 0 for p, m in zip(RECORDS, (left, front, empty))}
    ref = np.roll(arrays["left block"], 2, axis=2)  # the reference a little further left than the prediction
    fig, placed = overlay_figure(patient_array(image)[0], (2.0, 1.0, 0.8), arrays, RECORDS,
                                 {"left block": ref}, title="case_x")
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(t.startswith('"nothing"') and "EMPTY" in t and "not_found" in t for t in legend)
    assert any(t.startswith('"front block"') and "unknown_prompt" in t for t in legend)
    assert any("reference" in t for t in legend)
    assert {p for p, *_ in placed} == {"left block", "front block"}, "an empty prompt gets no row"
    texts = " ".join(t.get_text() for t in fig.texts)
    assert "patient's left is on the viewer's right" in texts
    out = tmp_path / "ref.png"
    panels = write_overlay(out, image, {"left block": left, "front block": front, "nothing": empty}, RECORDS,
                           {"left block": ref})
    png = read_png(out)
    white = [colour_hits(png, p, REFERENCE_COLOUR, view_slice(ref, p.view, p.index).shape) for p in panels]
    assert sum(len(h) for h in white) > 0
    for panel, hits in zip(panels, white):
        near = ndimage.binary_dilation(view_slice(ref, panel.view, panel.index), iterations=2)  # drawn outside
        assert near[hits[:, 0], hits[:, 1]].all()


def test_predict_and_evaluate_write_overlays(toy_dataset, trained_model, nnunet_env, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(toy_dataset["raw"] / "imagesTs" / f"{CASE_C}_0000.nii.gz", images)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("ball\nbox\nrod\na recipe for apple pie\n", encoding="utf-8")
    out = tmp_path / "pred"
    run_cli(predict_args(toy_dataset, trained_model, images, out, prompts, "--save_overlays", "--on_unknown",
                         "empty"), nnunet_env)
    entry = json.loads((out / "manifest.json").read_text())["cases"][CASE_C]
    png = out / "overlays" / f"{CASE_C}.png"
    assert png.is_file()
    empty = [p for p, rec in entry.items() if rec["voxels"] == 0]
    assert {"ball", "box"} <= {p for p, rec in entry.items() if rec["voxels"] > 0}
    assert "rod" in empty or "a recipe for apple pie" in empty, entry
    # the picture is redrawn here from the same files, to know where each slice landed
    masks = {p: sitk.ReadImage(str(out / rec["file"])) for p, rec in entry.items()}
    panels = write_overlay(tmp_path / "again.png", sitk.ReadImage(str(images / f"{CASE_C}_0000.nii.gz")), masks,
                           entry, title=CASE_C)
    assert np.array_equal(read_png(png), read_png(tmp_path / "again.png"))
    assert_outlines_on_masks(read_png(png), panels, {p: patient_array(m)[0] > 0 for p, m in masks.items()},
                             prompt_colours(list(entry)))
    assert {p.prompt for p in panels} == {p for p in entry if p not in empty}

    known = tmp_path / "known"  # evaluate scores vocabulary terms only: the foreign prompt is left out
    shutil.copytree(out, known)
    manifest = json.loads((known / "manifest.json").read_text())
    manifest["cases"][CASE_C].pop("a recipe for apple pie")
    (known / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    report = tmp_path / "eval"
    labels = toy_dataset["raw"] / "labelsTs"
    run_cli([cli("nnUNetv2_text_evaluate"), "-p", str(known), "-r", str(labels), "--vocab", "toy_shapes",
             "-o", str(report), "--save_overlays", str(images), "--num_processes", "1"], nnunet_env)
    assert "overlays/<case>.png" in (report / "report.md").read_text()
    drawn = read_png(report / "overlays" / f"{CASE_C}.png")
    kept = manifest["cases"][CASE_C]
    panels = write_case_overlay(tmp_path / "again_ref.png", images / f"{CASE_C}_0000.nii.gz", known, kept,
                                labels / f"{CASE_C}.nii.gz", {"ball": [1], "box": [2], "rod": [3]}, title=CASE_C)
    assert np.array_equal(drawn, read_png(tmp_path / "again_ref.png"))
    ref = patient_array(sitk.ReadImage(str(labels / f"{CASE_C}.nii.gz")))[0]
    white = 0
    for panel in panels:
        ref2d = view_slice(np.isin(ref, (1, 2, 3)), panel.view, panel.index)
        hits = colour_hits(drawn, panel, REFERENCE_COLOUR, ref2d.shape)
        assert ndimage.binary_dilation(ref2d, iterations=2)[hits[:, 0], hits[:, 1]].all()  # drawn outside
        white += len(hits)
    assert white > 0, "the reference is outlined in white"
    if os.environ.get("NNUNETV2_TEXT_DOCS_IMAGES"):
        with atomic_path(DOCS_IMAGE) as tmp:
            shutil.copyfile(report / "overlays" / f"{CASE_C}.png", tmp)
