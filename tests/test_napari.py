"""The napari widget in a real napari viewer, on Qt's offscreen platform (QT_QPA_PLATFORM=offscreen).

napari's canvas needs OpenGL, which Qt's offscreen platform only gets through GLX from an X server: the
``qt_display`` fixture starts a private virtual one (Xvfb; Debian package ``xvfb``, installed by .ci/run)
unless one is given in DISPLAY. Without napari (``pip install -e ".[napari]"``) or Xvfb these tests skip,
except in CI (``CI`` set), where they fail: CI must run them.

With ``NNUNETV2_TEXT_DOCS_IMAGES=1`` the test on the toy model also writes its screenshot of the viewer to
docs/images/napari_widget.png (the picture in docs/VIEWING.md).
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import CASE_A

DOCS_IMAGE = Path(__file__).resolve().parents[1] / "docs" / "images" / "napari_widget.png"


def unavailable(reason: str) -> None:
    """Skip on a developer's machine, fail loudly in CI (where the napari tests must run)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must run the napari tests (.ci/run installs napari and Xvfb)")
    pytest.skip(reason)


#: Xvfb lives as long as this test process: Qt keeps its X connection until the process ends, and Xlib ends a
#: process whose X server goes away (exit status 1), so the server is stopped only after pytest has exited
_XVFB_WHILE_PARENT_LIVES = """
"$2" -displayfd "$3" -screen 0 1280x1024x24 -nolisten tcp & xvfb=$!
while kill -0 "$1" 2>/dev/null && kill -0 "$xvfb" 2>/dev/null; do sleep 1; done
kill "$xvfb" 2>/dev/null
"""


def _start_xvfb(xvfb: str) -> str:
    """A virtual X server on a free display number (Xvfb picks it and writes it to a pipe)."""
    read, write = os.pipe()
    subprocess.Popen(["sh", "-c", _XVFB_WHILE_PARENT_LIVES, "xvfb", str(os.getpid()), xvfb, str(write)],
                     pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as f:
        number = f.readline().strip()
    if not number:
        unavailable("Xvfb did not start")
    return f":{number}"


@pytest.fixture(scope="session")
def qt_display():
    """Qt's offscreen platform, with OpenGL through a private Xvfb (or the DISPLAY given)."""
    if importlib.util.find_spec("napari") is None:
        unavailable('napari is not installed (pip install -e ".[napari]")')
    xvfb = shutil.which("Xvfb")
    if xvfb is None and not os.environ.get("DISPLAY"):
        unavailable("no X server for OpenGL: install Xvfb (Debian: apt-get install xvfb)")
    display = _start_xvfb(xvfb) if xvfb else os.environ["DISPLAY"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QT_QPA_PLATFORM", "offscreen")
        mp.setenv("DISPLAY", display)
        from napari.qt import get_qapp
        from qtpy.QtGui import QOpenGLContext

        get_qapp()  # Qt binds to the display now, once per process
        if not QOpenGLContext().create():  # say so here, not as a vispy error in every test
            pytest.fail(f"no OpenGL on Qt's offscreen platform through X display {display}")
        yield display


@pytest.fixture()
def viewer(qt_display):
    import napari

    v = napari.Viewer(show=True)  # shown on the offscreen platform: no window appears, the canvas gets OpenGL
    yield v
    v.close()


@pytest.fixture()
def widget(viewer):
    """The widget as napari opens it from the plugin's manifest (napari.yaml)."""
    _, w = viewer.window.add_plugin_dock_widget("nnunetv2_text", "Segment by text")
    return w


def open_image(viewer, path: Path):
    layers = viewer.open(str(path), plugin="nnunetv2_text")
    viewer.layers.selection.active = layers[0]
    return layers[0]


def wait_for(widget, timeout: float = 300.0) -> None:
    """Let the event loop run until the widget's worker has finished (the GUI stays responsive meanwhile)."""
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + timeout
    while widget.busy and time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)
    assert not widget.busy, "the worker did not finish in time"
    QApplication.processEvents()


def press(widget, folder, text: str) -> None:
    widget.folder.setText(str(folder))
    widget.prompts.setPlainText(text)
    widget.segment_button.click()


@pytest.fixture()
def small_image(tmp_path) -> Path:
    path = tmp_path / "img_0000.nii.gz"
    img = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=(8, 9, 10)).astype(np.float32))
    img.SetSpacing((0.8, 0.9, 2.0))
    sitk.WriteImage(img, str(path))
    return path


def fake_model(folder: Path, **dataset) -> Path:
    """A folder that looks like a model folder from outside (no checkpoints)."""
    folder.mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, **dataset}))
    (folder / "plans.json").write_text("{}")
    return folder


def test_reader_keeps_the_files_layout_and_spacing(viewer, small_image):
    layer = open_image(viewer, small_image)
    assert layer.data.shape == (8, 9, 10)
    assert np.allclose(layer.scale, (2.0, 0.9, 0.8))
    assert layer.source.path == str(small_image)


def test_bad_input_is_said_in_the_widget(viewer, widget, small_image, tmp_path):
    press(widget, tmp_path, "ball")  # no image layer yet
    assert "select an image layer" in widget.message.text()
    open_image(viewer, small_image)
    press(widget, tmp_path / "nowhere", "ball")
    assert "model folder not found" in widget.message.text()
    press(widget, tmp_path, "ball")
    assert "not a trained nnU-Net model folder" in widget.message.text()
    folder = fake_model(tmp_path / "model")
    press(widget, folder, "  \n\n")
    assert "type at least one prompt" in widget.message.text()
    press(widget, folder, "ball")  # looks like a model, holds none: said by the worker, not raised
    wait_for(widget)
    assert "no fold_*/checkpoint_final.pth" in widget.message.text()
    assert not widget.busy and widget.segment_button.isEnabled()
    assert [type(layer).__name__ for layer in viewer.layers] == ["Image"]


def test_refinement_model_asks_for_instructions_and_rounds(viewer, widget, tmp_path):
    folder = fake_model(tmp_path / "refiner", cowtalk={"shape_channels": {"1": 1}},
                        channel_names={"0": "CT", "1": "shape"})
    assert widget.prompts_label.text() == "Prompts" and widget.rounds.isHidden()
    widget.folder.setText(str(folder))
    widget.folder.editingFinished.emit()
    assert widget.prompts_label.text() == "Instructions" and not widget.rounds.isHidden()


def window_picture(viewer) -> np.ndarray:
    """A screenshot of the whole viewer window. Qt's offscreen platform leaves an OpenGL widget black in a
    window grab, so the canvas's place in it is filled with the canvas as napari's vispy scene renders it
    (the scene the viewer shows)."""
    from qtpy.QtCore import QPoint
    from qtpy.QtWidgets import QApplication

    for _ in range(10):  # let the layout settle (the dock widget takes its width from the canvas)
        QApplication.processEvents()
    picture = np.array(viewer.screenshot(canvas_only=False, flash=False))
    canvas = viewer.window._qt_viewer.canvas
    at = canvas.native.mapTo(viewer.window._qt_window, QPoint(0, 0))
    drawn = canvas._scene_canvas.render()
    h, w = min(drawn.shape[0], picture.shape[0] - at.y()), min(drawn.shape[1], picture.shape[1] - at.x())
    picture[at.y():at.y() + h, at.x():at.x() + w] = drawn[:h, :w]
    return picture


def test_typing_two_prompts_gives_their_masks(viewer, widget, toy_dataset, trained_model, tmp_path):
    from nnunetv2_text.inference.api import TextSegmenter

    image = toy_dataset["raw"] / "imagesTs" / f"{CASE_A}_0000.nii.gz"
    layer = open_image(viewer, image)
    widget.device.setCurrentText("cpu")
    press(widget, trained_model["folder"], "ball\nbox")
    assert widget.busy, "the prediction runs in a worker thread"
    wait_for(widget)
    labels = [lay for lay in viewer.layers if type(lay).__name__ == "Labels"]
    assert [lay.name for lay in labels] == ["ball", "box"], widget.message.text()
    expected, info = TextSegmenter(trained_model["folder"], device="cpu").predict(str(image), ["ball", "box"],
                                                                                 return_info=True)
    for lay in labels:
        assert np.array_equal(lay.data, expected[lay.name])
        assert lay.data.any()
        assert np.allclose(lay.scale, layer.scale)
        assert lay.metadata["nnunetv2_text"]["concept"] == info[lay.name]["concept"]
    assert '"ball": ball' in widget.message.text() and "flag: -" in widget.message.text()
    assert widget.progress.value() == widget.progress.maximum()
    assert viewer.layers.selection.active is layer, "the image stays selected: Segment can be pressed again"
    viewer.dims.set_current_step(0, int(np.argmax(expected["ball"].sum((1, 2)))))  # a slice through the ball
    picture = window_picture(viewer)
    _save_png(picture, tmp_path / "napari_widget.png")
    if os.environ.get("NNUNETV2_TEXT_DOCS_IMAGES"):
        _save_png(picture, DOCS_IMAGE)

    press(widget, trained_model["folder"], "a recipe for apple pie")
    wait_for(widget)
    assert "not known to this model" in widget.message.text() and "unknown_prompt" in widget.message.text()
    assert viewer.layers[-1].metadata["nnunetv2_text"]["flag"] == "unknown_prompt"


def _save_png(picture: np.ndarray, path: Path) -> None:
    from PIL import Image

    from nnunetv2_text.utils.io import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(picture).save(tmp, format="PNG")
