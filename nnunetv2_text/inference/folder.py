"""Predicting a folder of images with a prompt file: the engine behind ``nnUNetv2_text_predict``.

Order of work, so that bad input never leaves output behind:
1. list the input cases (nnU-Net's naming: ``<case>_<XXXX><ending>``) and check each has as many
   channels as the dataset; check the prompt file's case ids against them;
2. take this job's share of the cases (``part_id::num_parts``, exactly as nnU-Net splits them);
3. embed all prompts (refusing prompts longer than the encoder's limit) — only then write anything;
4. predict: preprocessing in worker processes, encoder once per tile, masks exported by a spawned pool;
5. a finished case gets a manifest fragment ``.manifest/<case>.json``, written after its masks (and, with
   ``--save_overlays``, its picture ``overlays/<case>.png``), and ``manifest.json`` is rebuilt from all
   fragments under a file lock (several array jobs share it).

Every file is written atomically, so a killed job leaves no half-written file; with
``--continue_prediction`` a rerun skips cases whose fragment exists and redoes the others.
"""
from __future__ import annotations

import fcntl
import json
import logging
import multiprocessing
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
from nnunetv2.inference.data_iterators import preprocessing_iterator_fromfiles
from nnunetv2.utilities.utils import create_lists_from_splitted_dataset_folder
from tqdm import tqdm

from nnunetv2_text.errors import UserInputError
from nnunetv2_text.evaluation.overlays import OVERLAYS, write_case_overlay
from nnunetv2_text.inference.export import ExportTarget, export_case
from nnunetv2_text.inference.plan import (CasePrompts, PromptPlan, Understanding, expand_all, plan_prompts,
                                          single_label_values)
from nnunetv2_text.inference.prompt_file import PromptFileError, PromptSpec
from nnunetv2_text.utils.image_header import Geometry, read_geometry
from nnunetv2_text.utils.io import TMP_MARKER, atomic_write_json
from nnunetv2_text.utils.orientation import check_direction, orientation_code

logger = logging.getLogger(__name__)

FRAGMENTS = ".manifest"
MANIFEST = "manifest.json"


class InputError(UserInputError):
    """An input image folder or case is unusable; the message names the case and file."""


def list_input_cases(input_folder: Path, file_ending: str, num_channels: int,
                     orientations_out: Optional[Dict[str, Optional[str]]] = None) -> Dict[str, List[str]]:
    """case id -> its channel files; an error names a case whose channel count or header is wrong.
    ``orientations_out`` receives each case's storage orientation."""
    input_folder = Path(input_folder)
    if not input_folder.is_dir():
        raise InputError(f"{input_folder}: input folder not found")
    lists = create_lists_from_splitted_dataset_folder(str(input_folder), file_ending)
    cases, orientations = {}, {}
    for files in lists:
        case = os.path.basename(files[0])[: -(len(file_ending) + 5)]
        if len(files) != num_channels:
            raise InputError(f"{input_folder}: case '{case}' has {len(files)} channel file(s) "
                             f"({[os.path.basename(f) for f in files]}), the model needs {num_channels}")
        expected = [str(input_folder / f"{case}_{i:04d}{file_ending}") for i in range(num_channels)]
        if sorted(os.path.abspath(f) for f in files) != sorted(os.path.abspath(f) for f in expected):
            raise InputError(f"{input_folder}: case '{case}' needs channels _0000.._{num_channels - 1:04d}, has "
                             f"{[os.path.basename(f) for f in files]}")
        orientations[case] = check_case_images(case, sorted(files))
        cases[case] = sorted(files)
    if not cases:
        raise InputError(f"{input_folder}: no images ending in {file_ending}")
    if orientations_out is not None:
        orientations_out.update(orientations)
    return cases


def check_case_images(case: str, files: List[str]) -> Optional[str]:
    """Read the image headers of one case and stop on what nnU-Net would only fail on deep in a worker
    process (a 4D series ends as "background workers died"): every channel must be a 3D image whose
    direction matrix is orthonormal, and all channels must share size, spacing, origin and direction.
    Returns the case's storage orientation ('LPS', 'RAS', ...). Formats SimpleITK cannot read are left to
    the dataset's own reader (None)."""
    geoms = []
    for f in files:
        try:
            g = read_geometry(f)
        except UserInputError:
            return None
        if g.dimension == 4 and g.size[3] == 1:  # a 3D volume stored with a trailing singleton axis is fine
            g = Geometry(g.size[:3], g.spacing[:3], g.origin[:3],
                         tuple(np.reshape(g.direction, (4, 4))[:3, :3].ravel()))
        elif g.dimension != 3:
            raise InputError(f"case '{case}': {os.path.basename(f)} is a {g.dimension}D image of size {g.size}; "
                             f"a 3D image is expected (split a 4D series into one file per channel: "
                             f"{case}_0000, {case}_0001, ...)")
        check_direction(g.direction, f"case '{case}': {os.path.basename(f)}")
        geoms.append((os.path.basename(f), g))
    for name, g in geoms[1:]:
        diff = g.mismatch(geoms[0][1], tol_mm=1e-4)
        if diff is not None:
            raise InputError(f"case '{case}': channel {name} differs from {geoms[0][0]} in {diff}; all channels "
                             f"of a case must share one geometry")
    return orientation_code(geoms[0][1].direction)


def warn_about_orientation(predictor, orientations: Dict[str, Optional[str]]) -> None:
    """A model that reads images in storage order (trained before canonical orientation) confuses left and
    right on inputs stored differently from its training data: say so for each such case."""
    if predictor.canonical_reader is not None:
        return
    trained = set(predictor.text_entry.get("orientation", {}).get("training") or ())
    if not trained:
        logger.warning("this model reads images in storage order and its checkpoint does not say how its training "
                       "images were stored: left and right are only right for inputs stored the same way "
                       "(inputs here: %s)", sorted({o for o in orientations.values() if o}))
        return
    for case, o in orientations.items():
        if o is not None and o not in trained:
            logger.warning("case '%s' is stored %s, the model's training images were stored %s and it reads "
                           "images in storage order: its left and right may be swapped", case, o,
                           "/".join(sorted(trained)))


@contextmanager
def _locked(path: Path):
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def rebuild_manifest(output_folder: Path, model_info: dict, file_ending: str) -> dict:
    frag_dir = Path(output_folder) / FRAGMENTS
    with _locked(Path(output_folder) / ".manifest.lock"):
        cases = {}
        for f in sorted(frag_dir.glob("*.json")):
            cases[f.stem] = json.loads(f.read_text(encoding="utf-8"))
        manifest = {"format": "nnunetv2_text.manifest", "version": 1, "file_ending": file_ending,
                    "model": model_info, "cases": cases}
        if "combined_labels" in model_info:  # --save_combined: one label map per case, named like nnU-Net's
            manifest["combined"] = {"labels": model_info["combined_labels"],
                                    "files": {c: f"{c}{file_ending}" for c in cases}}
        atomic_write_json(Path(output_folder) / MANIFEST, manifest)
    return manifest


def _remove_leftovers(output_folder: Path, case: str) -> None:
    for f in Path(output_folder).glob(f"{case}_*"):
        if TMP_MARKER in f.name:
            f.unlink()


@dataclass(frozen=True)
class FolderOptions:
    """How a folder is predicted: nnU-Net's own options (``--save_probabilities``, ``--continue_prediction``,
    ``-npp``, ``-nps``, ``-part_id``, ``-num_parts``), the pictures (``--save_overlays``) and where prompts
    missing from the model's cache are embedded (``--cache``, ``--text_device``)."""

    save_probabilities: bool = False
    continue_prediction: bool = False
    num_processes_preprocessing: int = 2
    num_processes_export: int = 2
    part_id: int = 0
    num_parts: int = 1
    save_overlays: bool = False
    cache_file: Optional[Path] = None
    encoder_device: str = "cpu"
    #: also one label map per case, ``<case_id><ending>``, of the single-label concepts (``--save_combined``)
    save_combined: bool = False


def predict_folder(predictor, input_folder, output_folder, spec: PromptSpec,
                   options: FolderOptions = FolderOptions(), understanding: Understanding = Understanding()) -> dict:
    """Predict this part's cases; see the module docstring for the order of work.

    ``understanding`` decides about unknown prompts and wordings (:func:`plan_prompts`): with
    ``on_unknown`` ``warn`` the mask is written and flagged in the manifest, ``empty`` writes an empty mask
    and flags it, ``error`` refuses before anything is written."""
    o = options
    if not 0 <= o.part_id < o.num_parts:
        raise InputError(f"part_id must be in [0, {o.num_parts - 1}], got {o.part_id}")
    ending = predictor.dataset_json["file_ending"]
    orientations: Dict[str, Optional[str]] = {}
    cases = list_input_cases(Path(input_folder), ending, predictor.num_input_channels, orientations)
    spec.check_cases(cases)
    warn_about_orientation(predictor, orientations)
    mine = list(cases)[o.part_id::o.num_parts]
    try:
        prompts_of = {c: expand_all(spec.prompts_for(c), predictor.vocabulary) for c in mine}
    except UserInputError as e:
        raise PromptFileError(f"{spec.source}: {e}") from None
    try:
        plan = plan_prompts(predictor, [p for ps in prompts_of.values() for p in ps], understanding, o.cache_file,
                            o.encoder_device)
    except UserInputError as e:
        raise PromptFileError(f"{spec.source}: {e}") from None

    output_folder = Path(output_folder)
    (output_folder / FRAGMENTS).mkdir(parents=True, exist_ok=True)
    todo = [c for c in mine if not (o.continue_prediction and (output_folder / FRAGMENTS / f"{c}.json").is_file())]
    logger.info("part %d/%d: %d cases, %d to predict", o.part_id, o.num_parts, len(mine), len(todo))
    for c in todo:
        _remove_leftovers(output_folder, c)
    if todo:
        _run(predictor, {c: cases[c] for c in todo}, {c: plan.for_case(prompts_of[c]) for c in todo}, plan,
             output_folder, o)
    return rebuild_manifest(output_folder, _model_info(predictor, understanding, o.save_combined), ending)


def _model_info(predictor, u: Understanding, save_combined: bool) -> dict:
    """What the manifest says about the model and the reading of prompts (and, with ``--save_combined``,
    the label table of the combined maps: the training dataset.json's)."""
    info = {"trainer": predictor.trainer_name, "model_folder": str(predictor.model_folder),
            "encoder": predictor.text_entry["model_id"], "embedding_dim": predictor.text_entry["embedding_dim"],
            "vocabulary_sha256": predictor.text_entry.get("vocabulary_sha256"),
            "on_unknown": u.on_unknown, "min_similarity": u.min_similarity, "min_margin": u.min_margin,
            "wording": u.wording}
    if save_combined:
        info["combined_labels"] = dict(predictor.dataset_json["labels"])
    return info


def _run(predictor, files_of: Dict[str, List[str]], case_plans: Dict[str, CasePrompts], plan: PromptPlan,
         output_folder: Path, o: FolderOptions) -> None:
    """Preprocess in nnU-Net's worker processes, predict each case here, export in a spawned pool."""
    todo = list(files_of)
    iterator = preprocessing_iterator_fromfiles(
        [files_of[c] for c in todo], None, [str(output_folder / c) for c in todo], predictor.plans_manager,
        predictor.dataset_json, predictor.configuration_manager, max(1, o.num_processes_preprocessing),
        predictor.device.type == "cuda", False)
    ending = predictor.dataset_json["file_ending"]
    pending: List[Tuple[str, object]] = []
    with multiprocessing.get_context("spawn").Pool(max(1, o.num_processes_export)) as pool:
        for item in tqdm(iterator, total=len(todo), desc="cases", disable=not predictor.allow_tqdm):
            case = os.path.basename(item["ofile"])
            data = item["data"]
            if isinstance(data, str):  # nnU-Net hands large arrays over as .npy files
                path, data = data, np.load(data)
                os.remove(path)
            logits = predictor.predict_case_logits(data, plan.embeddings_for(case_plans[case])).numpy()
            combined = single_label_values(case_plans[case], predictor.vocabulary) if o.save_combined else None
            target = ExportTarget(str(output_folder), case, ending, o.save_probabilities, combined)
            export_args = (logits, item["data_properties"], predictor.plans_manager, predictor.configuration_manager,
                           target, case_plans[case])
            pending.append((case, pool.apply_async(export_and_draw, (
                export_args, files_of[case][0] if o.save_overlays else None))))
            _collect(pending, output_folder, max_pending=2)  # bounded, like nnU-Net's export queue
        _collect(pending, output_folder, max_pending=0)


def export_and_draw(export_args: tuple, overlay_image: Optional[str]) -> dict:
    """:func:`export_case` and, given the case's image (``--save_overlays``), its picture
    ``overlays/<case>.png`` drawn from the masks just written. Both in the export worker, so drawing never
    holds up the network; both before the case's fragment, so ``--continue_prediction`` redoes a case
    whose picture is missing."""
    entry = export_case(*export_args)
    if overlay_image is not None:
        target = export_args[4]  # export_case's ExportTarget
        output_folder = Path(target.output_folder)
        write_case_overlay(output_folder / OVERLAYS / f"{target.case_id}.png", overlay_image, output_folder, entry,
                           title=target.case_id)
    return entry


def _collect(pending: list, output_folder: Path, max_pending: int) -> None:
    """Write the fragment of every finished export (the case's completion marker)."""
    while pending and (len(pending) > max_pending or pending[0][1].ready()):
        case, res = pending.pop(0)
        atomic_write_json(output_folder / FRAGMENTS / f"{case}.json", res.get())
