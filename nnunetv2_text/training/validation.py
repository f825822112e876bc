"""The trainers' final validation: per-concept Dice of a prompt model, per-class Dice of a refiner.

It lives with the trainers because it reads a trainer's split, dataset and log; the prediction itself is the
inference code's (:class:`TextPredictor` on the trainer's live network), so validation scores exactly what
``nnUNetv2_text_predict`` would answer.

Prompt models: for every validation case the network predicts each single-label concept's main term (one pass of the
encoder per tile for all of them), masks are brought back to the original geometry exactly as at
inference, and compared with nnU-Net's ``gt_segmentations``. ``validation/summary.json`` holds Dice
per concept and case, the per-concept mean and the overall mean; the training log prints them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from nnunetv2_text.evaluation.metrics import dice
from nnunetv2_text.inference.export import logits_to_masks
from nnunetv2_text.inference.predictor import TextPredictor
from nnunetv2_text.text.instructions import instruction_directions, join_instructions
from nnunetv2_text.utils.io import atomic_write_json


def _mean_or_none(values) -> Optional[float]:
    return float(np.mean(values)) if len(values) else None


def trainer_predictor(trainer, **kwargs) -> TextPredictor:
    """The inference code's predictor on the trainer's live network and text (``kwargs``: TextPredictor's)."""
    predictor = TextPredictor(device=trainer.device, allow_tqdm=False, **kwargs)
    predictor.initialize_from_network(trainer.network,
                                      (trainer.plans_manager, trainer.configuration_manager, trainer.dataset_json),
                                      trainer.text_checkpoint_entry(), trainer.__class__.__name__,
                                      trainer.inference_allowed_mirroring_axes)
    return predictor


def validate_prompts(trainer, save_probabilities: bool = False) -> dict:
    """Predict the validation cases with each single-label concept's main term, score per concept, write
    ``validation/summary.json`` and log the figures."""
    trainer.set_deep_supervision_enabled(False)
    trainer.network.eval()
    if trainer.is_ddp and trainer.local_rank != 0:
        return {}
    vocab = trainer.text.vocabulary
    concepts = [vocab.concepts[i] for i in trainer.val_concepts]
    per_case, present = _score_validation_cases(trainer, concepts)
    per_concept, absent_empty = _summarize(concepts, per_case, present, list(per_case))
    summary = {"metric": "Dice per concept (main term), original geometry, over the cases whose reference "
                         "contains the concept (evaluation.metrics.dice); in a merged dataset only on cases "
                         "whose source annotates the concept",
               "per_concept": per_concept,
               "mean": _mean_or_none([v for v in per_concept.values() if v is not None]),
               "absent_predicted_empty": absent_empty, "per_case": per_case}
    if trainer.sources is not None:
        by_source = {}
        for k in per_case:
            by_source.setdefault(trainer.sources.source_of(k), []).append(k)
        summary["per_source"] = {src: _summarize(concepts, per_case, present, keys)[0]
                                 for src, keys in sorted(by_source.items())}
    out = Path(trainer.output_folder) / "validation"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "summary.json", summary)
    _log_summary(trainer, summary)
    trainer.set_deep_supervision_enabled(True)
    return summary


def _score_validation_cases(trainer, concepts) -> tuple:
    """({case: {main term: Dice}}, {case: {main term: reference present}}) over the validation split; a
    merged dataset scores a concept only where the case's source annotates it."""
    predictor = trainer_predictor(trainer, tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                  perform_everything_on_device=True)
    index = trainer.text.term_index()
    emb = trainer.text.embeddings[[index[c.main] for c in concepts]]
    _, val_keys = trainer.do_split()
    dataset = trainer.dataset_class(trainer.preprocessed_dataset_folder, val_keys)
    gt_folder = Path(trainer.preprocessed_dataset_folder_base) / "gt_segmentations"
    rw = trainer.plans_manager.image_reader_writer_class()
    ending = trainer.dataset_json["file_ending"]
    per_case, present = {}, {}
    for key in tqdm(val_keys, desc="validation", disable=trainer.local_rank != 0):
        data, _, _, props = dataset.load_case(key)
        logits = predictor.predict_case_logits(torch.from_numpy(np.asarray(data)), emb)
        masks, _ = logits_to_masks(logits, props, trainer.plans_manager, trainer.configuration_manager)
        ref, _ = rw.read_seg(str(gt_folder / f"{key}{ending}"))
        scored = [(c, m) for c, m in zip(concepts, masks)
                  if trainer.sources is None or c.id in trainer.sources.annotated(key)]
        refs = [np.isin(ref[0], c.labels) for c, _ in scored]
        per_case[key] = {c.main: dice(m > 0, r) for (c, m), r in zip(scored, refs)}
        present[key] = {c.main: bool(r.any()) for (c, _), r in zip(scored, refs)}
    return per_case, present


def _summarize(concepts, per_case: dict, present: dict, keys) -> tuple:
    """(mean Dice per concept over ``keys`` where present, {concept: absent cases and how many came back empty})."""
    means, absent_empty = {}, {}
    for c in concepts:
        ks = [k for k in keys if c.main in per_case[k]]
        if not ks:
            continue
        means[c.main] = _mean_or_none([per_case[k][c.main] for k in ks if present[k][c.main]])
        # Dice of an absent concept is 1 exactly when nothing was predicted
        absent = [per_case[k][c.main] == 1.0 for k in ks if not present[k][c.main]]
        absent_empty[c.main] = {"cases": len(absent), "predicted_empty": int(sum(absent))}
    return means, absent_empty


def _log_summary(trainer, summary: dict) -> None:
    trainer.print_to_log_file("Validation complete", also_print_to_console=True)
    for name, value in summary["per_concept"].items():
        a = summary["absent_predicted_empty"][name]
        trainer.print_to_log_file(f"  Dice '{name}': {'-' if value is None else f'{value:.4f}'} "
                                  f"(absent in {a['cases']} cases, predicted empty in {a['predicted_empty']})",
                                  also_print_to_console=True)
    mean = summary["mean"]
    trainer.print_to_log_file(f"Mean validation Dice: {'-' if mean is None else f'{mean:.4f}'}",
                              also_print_to_console=True)


def validate_refinement(trainer) -> dict:
    """Final validation of a refinement trainer: per-class Dice of the refined validation cases."""
    trainer.set_deep_supervision_enabled(False)
    trainer.network.eval()
    predictor = trainer_predictor(trainer)
    index = trainer.text.term_index()
    _, val_keys = trainer.do_split()
    dataset = trainer.dataset_class(trainer.preprocessed_dataset_folder, val_keys)
    n_classes = trainer.label_manager.num_segmentation_heads
    per_case = {}
    for key in val_keys:
        data, seg, _, _ = dataset.load_case(key)
        errors = [e for e in trainer.instructions[key] if e["type"] != "none"]
        text = join_instructions(errors, "short") if errors else trainer.instructions[key][0]["short"]
        emb = trainer.text.embeddings[[index[text]]]
        directions = (instruction_directions([text], trainer.text.vocabulary, n_classes)
                      if trainer.text_config.direction_channels else None)
        logits = predictor.predict_case_logits(torch.from_numpy(np.asarray(data)).float(), emb, directions)
        pred, ref = logits.argmax(0).numpy(), np.asarray(seg)[0]
        # classes in either mask, as evaluation/cowtalk.py scores them (a class in neither is not scored)
        per_case[key] = {str(c): dice(pred == c, ref == c) for c in range(1, n_classes)
                         if (pred == c).any() or (ref == c).any()}
    vals = [v for d in per_case.values() for v in d.values()]
    summary = {"metric": "Dice per class present in prediction or reference, after one refinement step "
                         "(preprocessed space; evaluation.metrics.dice)",
               "mean": float(np.mean(vals)) if vals else None, "per_case": per_case}
    out = Path(trainer.output_folder) / "validation"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "summary.json", summary)
    trainer.print_to_log_file(f"Refinement validation mean Dice: {summary['mean']}")
    trainer.set_deep_supervision_enabled(True)
    return summary
