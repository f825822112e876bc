"""From per-prompt logits in preprocessed space to binary masks in the input image's geometry.

Same steps as nnU-Net's export (resample with the plans' probability resampling, revert cropping,
revert the transpose, write with the plans' reader/writer), but per prompt: a sigmoid and a 0.5
threshold for each channel instead of an argmax over classes. Runs in nnU-Net-style spawned export
workers, so it only takes picklable arguments.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image

from nnunetv2_text.inference.plan import CasePrompts
from nnunetv2_text.inference.positions import choose
from nnunetv2_text.inference.prompt_file import unique_slugs
from nnunetv2_text.utils.io import atomic_path
from nnunetv2_text.utils.orientation import world_summary


def logits_to_masks(logits, properties: dict, plans_manager, configuration_manager,
                    return_probabilities: bool = False) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """logits (N, *preprocessed) -> masks uint8 (N, *original array shape) [, probabilities float16]."""
    logits = torch.as_tensor(logits).float()
    spacing_t = [properties["spacing"][i] for i in plans_manager.transpose_forward]
    current = configuration_manager.spacing if len(configuration_manager.spacing) == \
        len(properties["shape_after_cropping_and_before_resampling"]) else [spacing_t[0], *configuration_manager.spacing]
    logits = configuration_manager.resampling_fn_probabilities(
        logits, properties["shape_after_cropping_and_before_resampling"], current, spacing_t)
    probs = torch.sigmoid(torch.as_tensor(logits).float())
    n = probs.shape[0]
    full = np.zeros((n, *properties["shape_before_cropping"]), np.float32)
    for i in range(n):
        full[i] = insert_crop_into_image(full[i], probs[i].numpy(), properties["bbox_used_for_cropping"])
    full = full.transpose([0] + [a + 1 for a in plans_manager.transpose_backward])
    masks = (full > 0.5).astype(np.uint8)
    return masks, (full.astype(np.float16) if return_probabilities else None)


def presence_scores(logits: np.ndarray) -> np.ndarray:
    """(N, *spatial) logits -> (N,) the highest foreground probability of each prompt anywhere in the case.

    A score derived from the probabilities (no extra head): a prompt whose structure is absent, or that
    names nothing the model learned, should nowhere reach a confident probability (docs/RESULTS.md
    measures how well it separates)."""
    peak = np.asarray(logits, dtype=np.float32).reshape(len(logits), -1).max(1)
    return 1.0 / (1.0 + np.exp(-peak))


#: a prompt the model knows whose mask came back empty: the structure was not found (absent, or rejected
#: by the network), said in the manifest so that no empty mask goes unexplained
FLAG_NOT_FOUND = "not_found"
#: the flags of an unknown prompt (:meth:`TextPredictor.understand`): mask kept, or written empty
FLAG_UNKNOWN, FLAG_UNKNOWN_EMPTIED = "unknown_prompt", "unknown_prompt_emptied"
UNKNOWN_FLAGS = (FLAG_UNKNOWN, FLAG_UNKNOWN_EMPTIED)


def unknown_flag(known: bool, emptied: bool) -> Optional[str]:
    """The manifest's flag for a prompt: None when it was understood, else whether its mask was kept."""
    return None if known else (FLAG_UNKNOWN_EMPTIED if emptied else FLAG_UNKNOWN)


def answer_prompts(masks: np.ndarray, case: CasePrompts, properties: dict
                   ) -> Dict[str, Tuple[Optional[int], Optional[dict]]]:
    """For each of the case's prompts, the row of ``masks`` that answers it (None: an empty mask) and, for
    a position prompt, the record of how its concept was chosen (:mod:`.positions`).

    ``masks`` are the rows of ``case.network`` in the reader's array order (``properties`` places them in
    the world); a position prompt chooses among ``case.candidates`` (concept, main term), whose main terms
    are among the network prompts."""
    row = {p: i for i, p in enumerate(case.network)}
    summaries = {}
    if case.positions:
        for concept, main in case.candidates:
            m = masks[row[main]]
            summaries[concept] = {"voxels": int(m.sum()), **world_summary(m, properties)}
    main_of = dict(case.candidates)
    out = {}
    for prompt in case.prompts:
        if prompt in case.positions:
            chosen, why = choose(case.positions[prompt], summaries)
            out[prompt] = (None if chosen is None else row[main_of[chosen]], why)
        else:
            out[prompt] = (row[prompt], None)
    return out


#: what the manifest records of how a prompt was understood (:meth:`TextPredictor.understand`)
UNDERSTOOD_KEYS = ("concept", "term", "similarity", "foreign_term", "foreign_similarity", "margin", "side")


def prompt_record(prompt: str, voxels: int, voxel_ml: float, presence: float, info: Optional[dict],
                  blanked: bool, why: Optional[dict]) -> dict:
    """The manifest's (and the Python API's) account of one prompt's answer."""
    if why is not None:  # a position prompt: what it was understood as is the relation and its choice
        return {"voxels": voxels, "volume_ml": round(voxels * voxel_ml, 4), "presence": round(presence, 4),
                "understood": {"relation": why["relation"], "concept": why["chosen"]}, "position": why,
                "flag": why["flag"]}
    flag = None if info is None else unknown_flag(info["known"], blanked)
    return {"voxels": voxels, "volume_ml": round(voxels * voxel_ml, 4), "presence": round(presence, 4),
            "understood": None if info is None else {k: info[k] for k in UNDERSTOOD_KEYS},
            "flag": FLAG_NOT_FOUND if flag is None and voxels == 0 else flag}


@dataclass(frozen=True)
class ExportTarget:
    """Where and how one case's masks are written; ``combined`` (prompt -> label value, ``--save_combined``)
    also writes the case's label map ``<case_id><file_ending>``."""

    output_folder: str
    case_id: str
    file_ending: str
    save_probabilities: bool = False
    combined: Optional[Dict[str, int]] = None


def combine_masks(masks: np.ndarray, probabilities: np.ndarray, values: Dict[int, int]) -> np.ndarray:
    """One label map from per-prompt masks: ``values`` maps a row of ``masks`` to its label value; a voxel
    claimed by several rows gets the value of the highest probability (the first row on a tie), a voxel
    claimed by none is background."""
    rows = list(values)
    out = np.zeros(masks.shape[1:], np.uint8 if max(values.values(), default=0) < 256 else np.uint16)
    if not rows:
        return out
    claimed = masks[rows].astype(bool)
    score = np.where(claimed, probabilities[rows].astype(np.float32), -1.0)
    best = np.asarray([values[r] for r in rows])[score.argmax(0)]
    out[claimed.any(0)] = best[claimed.any(0)]
    return out


def export_case(logits: np.ndarray, properties: dict, plans_manager, configuration_manager,
                target: ExportTarget, case: CasePrompts) -> dict:
    """Write one mask per prompt of ``case`` (atomically) and return the case's manifest entry: the file,
    the voxels, what the prompt was understood as and its flag (blanked prompts are written empty)."""
    masks, probs = logits_to_masks(logits, properties, plans_manager, configuration_manager,
                                   target.save_probabilities or target.combined is not None)
    presence = presence_scores(logits)
    answers = answer_prompts(masks, case, properties)
    rw = plans_manager.image_reader_writer_class()
    if target.combined is not None:
        rows = {answers[p][0]: v for p, v in target.combined.items() if answers[p][0] is not None}
        with atomic_path(os.path.join(target.output_folder, f"{target.case_id}{target.file_ending}")) as tmp:
            rw.write_seg(combine_masks(masks, probs, rows), tmp, properties)
    if not target.save_probabilities:
        probs = None
    voxel_ml = float(np.prod(properties["spacing"])) / 1000.0  # spacing in mm
    slugs = unique_slugs(case.prompts)
    entry = {}
    for prompt in case.prompts:
        i, why = answers[prompt]
        blanked = prompt in case.blank
        mask = masks[i] if i is not None and not blanked else np.zeros(masks.shape[1:], masks.dtype)
        name = f"{target.case_id}_{slugs[prompt]}{target.file_ending}"
        with atomic_path(os.path.join(target.output_folder, name)) as tmp:
            rw.write_seg(mask, tmp, properties)
        rec = {"file": name, **prompt_record(prompt, int(mask.sum()), voxel_ml,
                                              0.0 if i is None else float(presence[i]),
                                              case.understood.get(prompt), blanked, why),
               "probabilities": None}
        if probs is not None:
            pname = f"{target.case_id}_{slugs[prompt]}.npz"
            prob = probs[i] if i is not None and not blanked else np.zeros(probs.shape[1:], probs.dtype)
            with atomic_path(os.path.join(target.output_folder, pname)) as tmp:
                with open(tmp, "wb") as f:
                    np.savez_compressed(f, probabilities=prob)
            rec["probabilities"] = pname
        entry[prompt] = rec
    return entry
