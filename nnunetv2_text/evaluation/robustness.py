"""Prompt robustness (SEER protocol): how much Dice moves when the same concept is worded differently.

Definitions (per concept): for every case where the concept is present, take the Dice of each of its
K wordings and compute their mean, population standard deviation (ddof = 0) and minimum (worst case);
these are averaged over cases, and gap = mean - worst. Negative prompts are left out (Dice there only
says whether the prediction is empty).
"""
from __future__ import annotations

import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Sequence, Union

import numpy as np

from nnunetv2_text.evaluation.manifest import EvaluationInputError, read_json_input
from nnunetv2_text.text.vocabulary import Vocabulary, normalize_term
from nnunetv2_text.utils.io import atomic_write_json

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]


def _read_paraphrase_json(path: PathLike) -> Dict[str, List[str]]:
    path = Path(path)
    obj = read_json_input(path, "paraphrase file")
    if not isinstance(obj, dict):
        raise EvaluationInputError(f"{path}: expected an object {{concept: [wordings]}}")
    for key, wordings in obj.items():
        if not isinstance(wordings, list) or not all(isinstance(w, str) and w.strip() for w in wordings):
            raise EvaluationInputError(f"{path}: '{key}' must map to a list of non-empty strings")
    return obj


def load_paraphrases(path: PathLike, vocab: Vocabulary) -> Dict[str, str]:
    """Normalized wording -> concept id. Keys of the file are concept ids or vocabulary terms."""
    obj = _read_paraphrase_json(path)
    ids = {c.id for c in vocab.concepts}
    out: Dict[str, str] = {}
    for key, wordings in obj.items():
        if key in ids:
            cid = key
        else:
            concept = vocab.lookup(key)
            if concept is None:
                raise EvaluationInputError(
                    f"{path}: key '{key}' is neither a concept id nor a term of vocabulary '{vocab.name}'")
            cid = concept.id
        for w in wordings:
            norm = normalize_term(w)
            if out.get(norm, cid) != cid:
                raise EvaluationInputError(f"{path}: wording '{w}' is listed for '{out[norm]}' and '{cid}'")
            known = vocab.lookup(w)
            if known is not None and known.id != cid:
                logger.warning("%s: wording '%s' is a vocabulary term of '%s' but listed for '%s'; "
                               "the paraphrase file wins", path, w, known.id, cid)
            out[norm] = cid
    return out


def paraphrases_to_prompt_file(paraphrases_json: PathLike, out_json: PathLike) -> Path:
    """Write ``{"prompts": [...]}`` with every wording once, ready for ``nnUNetv2_text_predict``."""
    obj = _read_paraphrase_json(paraphrases_json)
    prompts: Dict[str, None] = {}
    for wordings in obj.values():
        for w in wordings:
            prompts.setdefault(w.strip(), None)
    out = Path(out_json)
    atomic_write_json(out, {"prompts": list(prompts)})
    return out


def _finite(values: Iterable[float]) -> List[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def robustness_stats(rows: Sequence[Mapping], metric: str = "dice") -> List[dict]:
    """Per-concept SEER statistics over cases with at least two wordings of that concept."""
    groups: Dict[str, Dict[str, Dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        if r["is_negative"] or r[metric] is None or not math.isfinite(float(r[metric])):
            continue
        groups[r["concept"]][r["case"]][r["prompt"]] = float(r[metric])
    out = []
    for concept in sorted(groups):
        per_case = {case: v for case, v in groups[concept].items() if len(v) >= 2}
        if not per_case:
            continue
        means = [float(np.mean(list(v.values()))) for v in per_case.values()]
        stds = [float(np.std(list(v.values()), ddof=0)) for v in per_case.values()]
        worsts = [float(min(v.values())) for v in per_case.values()]
        wordings = sorted({p for v in per_case.values() for p in v})
        per_wording = {w: float(np.mean([v[w] for v in per_case.values() if w in v])) for w in wordings}
        out.append({
            "concept": concept,
            "n_cases": len(per_case),
            "n_wordings": len(wordings),
            f"mean_{metric}": float(np.mean(means)),
            f"std_{metric}": float(np.mean(stds)),
            f"worst_{metric}": float(np.mean(worsts)),
            "gap": float(np.mean(means) - np.mean(worsts)),
            "per_wording": per_wording,
            "values": [x for v in per_case.values() for x in v.values()],
        })
    return out


def left_right_summary(rows: Sequence[Mapping], counterparts: Mapping[str, str]) -> List[dict]:
    """Per lateral concept: mean wrong-side fraction and the rate of predictions mostly on the wrong side.

    Only non-empty predictions count (an empty mask is on neither side).
    """
    by_concept: Dict[str, List[float]] = defaultdict(list)
    for r in rows:
        if r["concept"] in counterparts:
            by_concept[r["concept"]]  # keep the concept even when all its predictions are empty
            v = r.get("wrong_side_fraction")
            if v is not None and math.isfinite(float(v)):
                by_concept[r["concept"]].append(float(v))
    out = []
    for concept in sorted(by_concept):
        vals = by_concept[concept]
        out.append({
            "concept": concept,
            "counterpart": counterparts[concept],
            "n_nonempty": len(vals),
            "mean_wrong_side_fraction": float(np.mean(vals)) if vals else math.nan,
            "confusion_rate": float(np.mean([v > 0.5 for v in vals])) if vals else math.nan,
        })
    return out


def summarize_values(values: Iterable[float]) -> dict:
    """mean/std (ddof 0)/n over finite values, plus the count of infinite ones (e.g. HD95 of an empty mask)."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    finite = _finite(vals)
    return {
        "mean": float(np.mean(finite)) if finite else None,
        "std": float(np.std(finite, ddof=0)) if finite else None,
        "n": len(finite),
        "n_infinite": len(vals) - len(finite),
    }
