"""napari widget "Segment by text": pick a model folder, type one prompt per line, press Segment.

It runs on the selected image layer, read by the model from the layer's file (``layer.source.path``), so
that left and right come from the file's header whatever napari shows; the masks come back in the
file's voxel layout (:class:`~nnunetv2_text.inference.api.TextSegmenter`), which is the layer's when the
image was opened with this plugin's reader. The prediction is the Python API's, run in a worker thread
(napari's ``thread_worker``) while a progress bar counts the sliding window's tiles, so the viewer stays
responsive. Each prompt becomes a Labels layer named by the prompt, outlined in the colour the overlay
pictures give it; what the model understood it as and its flag (as in the manifest) are listed under
the button. A CoWTalk refinement model asks for instructions and rounds instead, and adds one label map
per round.

Mistakes in the input (no image layer, a folder that holds no text model, no prompt, a prompt the model
does not know) are said in the widget, in words; anything else is a bug and is logged with its traceback.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

logger = logging.getLogger(__name__)


def _keep_triton_away_from_mesa() -> None:
    """Block triton in a napari process whose OpenGL driver is Mesa's, before torch can import it.

    Mesa's drivers (llvmpipe, radeonsi, iris) load their LLVM with global symbols when napari's canvas
    starts; triton, which torch imports with ``torch._dynamo`` (nnU-Net's predictor does), carries another
    LLVM, and loading it afterwards crashes the process (segmentation fault). Triton only serves
    ``torch.compile``, which prediction here does not use."""
    if "triton" in sys.modules:
        return
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            mesa_llvm = "libLLVM" in f.read()
    except OSError:  # not Linux: no Mesa
        return
    if mesa_llvm:
        sys.modules["triton"] = None  # an import of triton now fails, and torch takes it as "no triton"
        logger.info("triton disabled in this napari session: its LLVM would crash beside the OpenGL driver's")


_keep_triton_away_from_mesa()

import numpy as np  # noqa: E402  (after the guard: nothing below may import triton first)
from napari.layers import Image  # noqa: E402
from napari.qt.threading import create_worker
from napari.utils.colormaps import DirectLabelColormap
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (QComboBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit,
                            QProgressBar, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from nnunetv2_text.errors import UserInputError
from nnunetv2_text.evaluation.overlays import describe, prompt_colours
from nnunetv2_text.inference.export import UNKNOWN_FLAGS

COLOURS = {"error": "#ff6b6b", "warning": "#ffb347", "info": "#d0d0d0"}
PROMPT_HINT = "one prompt per line, e.g.\nleft kidney\nliver"
INSTRUCTION_HINT = "one instruction per line, one round each, e.g.\nWiden the right ICA."


@dataclass(frozen=True)
class Request:
    """One press of Segment, checked in the GUI thread before any work starts."""
    folder: str
    device: str
    files: Tuple[str, ...]  # the layer's file, and for a model of several channels its siblings
    lines: Tuple[str, ...]  # prompts, or a refinement model's instructions, one per round
    refiner: bool
    layer: Image


class _TileSignal(QObject):
    """Carries (done, total) tiles from the worker thread to the progress bar (Qt queues it across threads)."""
    tiles = Signal(int, int)


def channel_files(path: str, channels: int) -> Tuple[str, ...]:
    """The model's input files for an image layer's file: the file itself, or for a model of several channels
    the case's channel files in nnU-Net's naming (``<case>_0000<ending>``, ``<case>_0001<ending>``, ...)."""
    if channels == 1:
        return (path,)
    p = Path(path)
    cut = p.name.rfind("_0000.")
    if cut < 0:
        raise UserInputError(f"the model reads {channels} channels: open the first channel of a case in nnU-Net's "
                             f"naming (<case>_0000.nii.gz, with _0001, ... beside it); '{p.name}' is not")
    files = tuple(str(p.with_name(f"{p.name[:cut]}_{i:04d}{p.name[cut + 5:]}")) for i in range(channels))
    missing = [Path(f).name for f in files if not Path(f).is_file()]
    if missing:
        raise UserInputError(f"the model reads {channels} channels; missing beside {p.name}: {', '.join(missing)}")
    return files


def result_lines(info: Dict[str, dict]) -> Tuple[List[str], List[str]]:
    """(a legend line per prompt, the prompts the model did not know), as the manifest records them."""
    lines = [describe(p, {"understood": rec, "voxels": rec.get("voxels"), "flag": rec.get("flag")})
             for p, rec in info.items()]
    return lines, [p for p, rec in info.items() if rec.get("flag") in UNKNOWN_FLAGS]


class TextSegmentWidget(QWidget):
    """The dock widget; ``napari_viewer`` is given by napari when the plugin's widget is opened."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self._answered = False  # whether the last press ended with layers added
        self._segmenters: Dict[Tuple[str, str], object] = {}  # (folder, device) -> loaded TextSegmenter
        self._signal = _TileSignal()
        self._signal.tiles.connect(self._on_tiles)
        self._build()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("<trainer>__<plans>__<configuration> folder")
        self.folder.editingFinished.connect(self._update_mode)
        browse = QPushButton("Browse...")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.folder)
        row.addWidget(browse)
        self.device = QComboBox()
        self.device.addItems(_devices())
        self.prompts_label = QLabel("Prompts")
        self.prompts = QPlainTextEdit()
        self.prompts.setPlaceholderText(PROMPT_HINT)
        self.rounds_label = QLabel("Rounds")
        self.rounds = QSpinBox()
        self.rounds.setRange(1, 10)
        self.rounds.setToolTip("a single instruction is applied this many times, each output fed back")
        self.segment_button = QPushButton("Segment")
        self.segment_button.clicked.connect(self.segment)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Model folder", row)
        form.addRow("Device", self.device)
        form.addRow(self.prompts_label, self.prompts)
        form.addRow(self.rounds_label, self.rounds)
        layout = QVBoxLayout(self)
        for item in (form, self.segment_button, self.progress, self.message):
            (layout.addLayout if isinstance(item, QFormLayout) else layout.addWidget)(item)
        layout.addStretch(1)
        self._set_refiner(False)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Trained model folder", self.folder.text())
        if folder:
            self.folder.setText(folder)
            self._update_mode()

    def _set_refiner(self, refiner: bool) -> None:
        self.prompts_label.setText("Instructions" if refiner else "Prompts")
        self.prompts.setPlaceholderText(INSTRUCTION_HINT if refiner else PROMPT_HINT)
        self.rounds_label.setVisible(refiner)
        self.rounds.setVisible(refiner)

    def _update_mode(self) -> None:
        """A refinement model asks for instructions and rounds, a prompt model for prompts."""
        if not self.folder.text().strip():
            return
        try:
            self._set_refiner(bool(self._inspect()["refiner"]))
            self.say("")
        except UserInputError as e:
            self.say(str(e), "error")

    def say(self, text: str, kind: str = "info") -> None:
        """Show a message under the button (errors in red, warnings in orange)."""
        self.message.setStyleSheet(f"color: {COLOURS[kind]}")
        self.message.setText(text)

    @property
    def busy(self) -> bool:
        return self.worker is not None

    # ------------------------------------------------------------------ running
    def _inspect(self) -> dict:
        from nnunetv2_text.inference.api import TextSegmenter

        return TextSegmenter.inspect_folder(self.folder.text().strip())

    def request(self) -> Request:
        """What Segment would run, or a :class:`UserInputError` saying what is missing."""
        layer = self.viewer.layers.selection.active
        if not isinstance(layer, Image):
            raise UserInputError("select an image layer first (open an image file, e.g. case_0000.nii.gz)")
        path = layer.source.path
        if not path:
            raise UserInputError(f"the image layer '{layer.name}' was not opened from a file: the model reads the "
                                 "file itself, so that left and right come from its header; open the image file")
        if not self.folder.text().strip():
            raise UserInputError("choose the trained model's folder first")
        model = self._inspect()
        self._set_refiner(bool(model["refiner"]))
        lines = tuple(s.strip() for s in self.prompts.toPlainText().splitlines() if s.strip())
        if not lines:
            raise UserInputError("type an instruction first" if model["refiner"] else
                                 "type at least one prompt, one per line")
        if model["refiner"]:  # one instruction repeated, or one round per line, as --instructions runs them
            from nnunetv2_text.inference.prompt_file import instruction_steps

            lines = tuple(instruction_steps({"*": lines[0] if len(lines) == 1 else list(lines)}, "image",
                                            self.rounds.value()))
        return Request(self.folder.text().strip(), self.device.currentText(),
                       channel_files(str(path), int(model["channels"])), lines, bool(model["refiner"]), layer)

    def segment(self) -> None:
        """The Segment button: check the input here, then predict in a worker thread."""
        if self.busy:
            return
        try:
            req = self.request()
        except UserInputError as e:
            self.say(str(e), "error")
            return
        self.say("loading the model..." if (req.folder, req.device) not in self._segmenters else "segmenting...")
        self.segment_button.setEnabled(False)
        self._answered = False
        self.progress.setRange(0, 0)  # busy until the first tile reports
        self.worker = create_worker(self._run, req, _start_thread=False, _ignore_errors=True)
        self.worker.returned.connect(lambda result: self._show(req, result))
        self.worker.errored.connect(self._failed)
        self.worker.finished.connect(self._finished)
        self.worker.start()

    def _run(self, req: Request) -> dict:
        """In the worker thread: load the model once per (folder, device), then predict or refine."""
        from nnunetv2_text.inference.api import TextSegmenter

        key = (req.folder, req.device)
        if key not in self._segmenters:
            self._segmenters[key] = TextSegmenter(req.folder, device=req.device, progress=self._signal.tiles.emit)
        seg = self._segmenters[key]
        if req.refiner:
            return {"rounds": seg.refine(req.files, list(req.lines))}
        image = req.files[0] if len(req.files) == 1 else list(req.files)
        masks, info = seg.predict(image, list(req.lines), return_info=True)
        return {"masks": masks, "info": info}

    def _on_tiles(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(done)
        self.progress.setFormat("tile %v of %m")

    def _failed(self, error: Exception) -> None:
        if isinstance(error, UserInputError):
            self.say(str(error), "error")
        else:
            logger.error("segmenting failed", exc_info=(type(error), error, error.__traceback__))
            self.say(f"segmenting failed: {type(error).__name__}: {error} (the log has the details)", "error")

    def _finished(self) -> None:
        self.worker = None
        self.segment_button.setEnabled(True)
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if self._answered else 0)
        self.progress.setFormat("%p%")

    # ------------------------------------------------------------------ results
    def _show(self, req: Request, result: dict) -> None:
        """Add the answer's Labels layers over the image layer and say what each prompt was understood as."""
        layer = req.layer
        arrays = result.get("masks") or {f"round {k + 1}": seg for k, seg in enumerate(result.get("rounds", []))}
        for name, arr in arrays.items():
            if arr.shape != layer.data.shape:
                self.say(f"the answer has shape {arr.shape}, the layer '{layer.name}' {layer.data.shape}: open the "
                         "image with this plugin's reader (nnunetv2_text), which keeps the file's voxel layout",
                         "error")
                return
        self._answered = True
        if "rounds" in result:
            for (name, arr), instruction in zip(arrays.items(), req.lines):
                self.viewer.add_labels(arr, name=f"{name}: {instruction}", scale=layer.scale, translate=layer.translate)
            self.say(f"{len(arrays)} round(s) refined")
            self.viewer.layers.selection.active = layer
            return
        colours = prompt_colours(list(arrays))
        for prompt, mask in arrays.items():
            rgba = np.array([*colours[prompt], 255], float) / 255.0
            self.viewer.add_labels(mask, name=prompt, scale=layer.scale, translate=layer.translate,
                                   colormap=DirectLabelColormap(color_dict={None: np.zeros(4), 0: np.zeros(4), 1: rgba}),
                                   metadata={"nnunetv2_text": result["info"][prompt]})
        lines, unknown = result_lines(result["info"])
        if unknown:
            lines.insert(0, "not known to this model (flagged as in the manifest): " +
                         ", ".join(f"'{p}'" for p in unknown))
        self.say("\n".join(lines), "warning" if unknown else "info")
        self.viewer.layers.selection.active = layer  # napari selects a new layer: keep the image, for the next press


def _devices() -> List[str]:
    """cuda first where there is one: the widget's default is the fastest device."""
    import torch

    return (["cuda"] if torch.cuda.is_available() else []) + ["cpu"]
