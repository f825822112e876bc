"""From per-prompt logits in preprocessed space to binary masks in the input image's geometry.

Same steps as nnU-Net's export (resample with the plans' probability resampling, revert cropping,
revert the transpose, write with the plans' reader/writer), but per prompt: a sigmoid and a 0.5
threshold for each channel instead of an argmax over classes. Runs in nnU-Net-style spawned export
workers, so it only takes picklable arguments.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image

from nnunetv2_text.utils.io import atomic_path


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


def export_case(logits: np.ndarray, properties: dict, plans_manager, configuration_manager,
                output_folder: str, case_id: str, prompts: List[str], slugs: Dict[str, str], file_ending: str,
                save_probabilities: bool = False) -> dict:
    """Write one mask per prompt (atomically) and return the case's manifest entry."""
    masks, probs = logits_to_masks(logits, properties, plans_manager, configuration_manager, save_probabilities)
    rw = plans_manager.image_reader_writer_class()
    voxel_ml = float(np.prod(properties["spacing"])) / 1000.0  # spacing in mm
    entry = {}
    for i, prompt in enumerate(prompts):
        name = f"{case_id}_{slugs[prompt]}{file_ending}"
        with atomic_path(os.path.join(output_folder, name)) as tmp:
            rw.write_seg(masks[i], tmp, properties)
        rec = {"file": name, "voxels": int(masks[i].sum()), "volume_ml": round(int(masks[i].sum()) * voxel_ml, 4),
               "probabilities": None}
        if probs is not None:
            pname = f"{case_id}_{slugs[prompt]}.npz"
            with atomic_path(os.path.join(output_folder, pname)) as tmp:
                with open(tmp, "wb") as f:
                    np.savez_compressed(f, probabilities=probs[i])
            rec["probabilities"] = pname
        entry[prompt] = rec
    return entry
