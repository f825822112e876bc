"""The trainer's final validation, with prompts: per-concept Dice on the validation cases.

For every validation case the network predicts each single-label concept's main term (one pass of the
encoder per tile for all of them), masks are brought back to the original geometry exactly as at
inference, and compared with nnU-Net's ``gt_segmentations``. ``validation/summary.json`` holds Dice
per concept and case, the per-concept mean and the overall mean; the training log prints them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from nnunetv2_text.inference.export import logits_to_masks
from nnunetv2_text.inference.predictor import TextPredictor
from nnunetv2_text.utils.io import atomic_write_json


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice with the empty-vs-empty convention of nnU-Net's own summary (NaN: nothing to score)."""
    inter, total = np.logical_and(pred, ref).sum(), pred.sum() + ref.sum()
    return float("nan") if total == 0 else float(2.0 * inter / total)


def _nan_to_none(obj):
    """JSON has no NaN: write null (a concept absent from prediction and reference)."""
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


def validate_trainer(trainer, save_probabilities: bool = False) -> dict:
    trainer.set_deep_supervision_enabled(False)
    trainer.network.eval()
    if trainer.is_ddp and trainer.local_rank != 0:
        return {}
    predictor = TextPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                              perform_everything_on_device=True, device=trainer.device, allow_tqdm=False)
    predictor.initialize_from_trainer(trainer)
    vocab = trainer.text.vocabulary
    concepts = [vocab.concepts[i] for i in trainer.val_concepts]
    index = trainer.text.term_index()
    emb = trainer.text.embeddings[[index[c.main] for c in concepts]]

    _, val_keys = trainer.do_split()
    dataset = trainer.dataset_class(trainer.preprocessed_dataset_folder, val_keys)
    gt_folder = Path(trainer.preprocessed_dataset_folder_base) / "gt_segmentations"
    rw = trainer.plans_manager.image_reader_writer_class()
    ending = trainer.dataset_json["file_ending"]
    per_case = {}
    for key in tqdm(val_keys, desc="validation", disable=trainer.local_rank != 0):
        data, _, _, props = dataset.load_case(key)
        logits = predictor.predict_case_logits(torch.from_numpy(np.asarray(data)), emb)
        masks, _ = logits_to_masks(logits, props, trainer.plans_manager, trainer.configuration_manager)
        ref, _ = rw.read_seg(str(gt_folder / f"{key}{ending}"))
        ref = ref[0]
        per_case[key] = {c.main: dice(m > 0, np.isin(ref, c.labels)) for c, m in zip(concepts, masks)}
    per_concept = {c.main: float(np.nanmean([per_case[k][c.main] for k in per_case] or [np.nan]))
                   for c in concepts}
    summary = {"metric": "Dice per concept (main term), original geometry; NaN = absent in prediction and "
                         "reference", "per_concept": per_concept,
               "mean": float(np.nanmean(list(per_concept.values()))) if per_concept else float("nan"),
               "per_case": per_case}
    out = Path(trainer.output_folder) / "validation"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "summary.json", _nan_to_none(summary))
    trainer.print_to_log_file("Validation complete", also_print_to_console=True)
    for name, value in per_concept.items():
        trainer.print_to_log_file(f"  Dice '{name}': {value:.4f}", also_print_to_console=True)
    trainer.print_to_log_file(f"Mean validation Dice: {summary['mean']:.4f}", also_print_to_console=True)
    trainer.set_deep_supervision_enabled(True)
    return summary
