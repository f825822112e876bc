"""Evaluation of text-prompted predictions: per-mask metrics, prompt robustness, CoWTalk tables, reports.

Entry points: :func:`evaluate_folder` (prompt predictions + manifest), :func:`evaluate_cowtalk` (refined
label maps of the CoWTalk task), :func:`paraphrases_to_prompt_file`. See docs/EVALUATION.md.
"""
from nnunetv2_text.evaluation.cowtalk import evaluate_cowtalk
from nnunetv2_text.evaluation.manifest import EvaluationInputError, read_manifest
from nnunetv2_text.evaluation.metrics import betti0_error, cldice, dice, mask_metrics, surface_metrics
from nnunetv2_text.evaluation.report import evaluate_folder
from nnunetv2_text.evaluation.robustness import paraphrases_to_prompt_file, robustness_stats

__all__ = ["evaluate_folder", "evaluate_cowtalk", "paraphrases_to_prompt_file", "robustness_stats",
           "EvaluationInputError", "read_manifest", "dice", "surface_metrics", "cldice", "betti0_error",
           "mask_metrics"]
