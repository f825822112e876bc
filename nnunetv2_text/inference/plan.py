"""One pass of understanding: what every prompt of a run is, decided once, before any image is read.

:func:`plan_prompts` embeds a run's prompts, reads what each was understood as (nearest concept, side,
similarity, margin over the foreign phrases), applies ``--on_unknown`` (which prompts are blanked, or an
error before anything is written), gives each known prompt the embedding of its nearest term
(``--wording``), and expands position prompts ("the largest structure") into the main terms they choose
among. The command (``folder.py``) and the Python API (``api.py``) both build a :class:`PromptPlan` this
way; prediction and export then only read it, one :class:`CasePrompts` per case.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple

import numpy as np

from nnunetv2_text.inference.positions import network_prompts, plan_position_prompts
from nnunetv2_text.inference.prompt_file import (DEFAULT_MIN_MARGIN, DEFAULT_MIN_SIMILARITY, DEFAULT_WORDING,
                                                 ON_UNKNOWN, is_all)
from nnunetv2_text.errors import UserInputError


@dataclass(frozen=True)
class Understanding:
    """How prompts are read (``--on_unknown``, ``--min_similarity``, ``--min_margin``, ``--wording``)."""

    on_unknown: str = "warn"
    min_similarity: float = DEFAULT_MIN_SIMILARITY
    min_margin: float = DEFAULT_MIN_MARGIN
    wording: str = DEFAULT_WORDING

    def __post_init__(self) -> None:
        if self.on_unknown not in ON_UNKNOWN:
            raise UserInputError(f"--on_unknown must be one of {', '.join(ON_UNKNOWN)}, got '{self.on_unknown}'")


@dataclass(frozen=True)
class CasePrompts:
    """What one case's export needs of the plan (picklable: it travels to the export workers).

    ``prompts``: the user's prompts of the case, in order; ``network``: the rows of the case's logits (a
    position prompt runs the main terms it chooses among, ``candidates``); ``understood``: the predictor's
    reading of each prompt; ``blank``: prompts answered with an empty mask; ``positions``: position prompts
    and their relation."""

    prompts: Tuple[str, ...]
    network: Tuple[str, ...]
    understood: Dict[str, dict] = field(default_factory=dict)
    blank: FrozenSet[str] = frozenset()
    positions: Dict[str, str] = field(default_factory=dict)
    candidates: Tuple[Tuple[str, str], ...] = ()


@dataclass
class PromptPlan:
    """Every prompt of a run: the network's prompts with their embedding rows (after ``--wording``), what
    each prompt was understood as, which are blanked, and the position prompts with their candidates."""

    network: List[str]
    embeddings: Optional[np.ndarray]
    understood: Dict[str, dict]
    blank: FrozenSet[str]
    positions: Dict[str, str]
    candidates: Tuple[Tuple[str, str], ...]

    def for_case(self, prompts: Sequence[str]) -> CasePrompts:
        """The part of the plan that answers ``prompts`` (a subset of the planned ones)."""
        network = tuple(network_prompts(list(prompts), self.positions, list(self.candidates)))
        return CasePrompts(tuple(prompts), network, {p: self.understood[p] for p in prompts if p in self.understood},
                           frozenset(p for p in prompts if p in self.blank),
                           {p: self.positions[p] for p in prompts if p in self.positions}, self.candidates)

    def embeddings_for(self, case: CasePrompts) -> np.ndarray:
        """(len(case.network), dim): the embedding rows of a case's network prompts."""
        row = {p: i for i, p in enumerate(self.network)}
        return self.embeddings[[row[p] for p in case.network]]


def expand_all(prompts: Sequence[str], vocabulary) -> List[str]:
    """``all`` stands for every single-label concept of the model's vocabulary, by its main term, in the
    vocabulary's order (group concepts are unions of these); other prompts stay where they are, duplicates
    dropped. A model without single-label concepts (an imported open-vocabulary model) refuses ``all``."""
    if not any(is_all(p) for p in prompts):
        return list(prompts)
    mains = [] if vocabulary is None else [c.main for c in vocabulary.concepts if len(c.labels) == 1]
    if not mains:
        raise UserInputError("prompt 'all': the model's vocabulary has no single-label concept to prompt "
                             "(list the structures instead)")
    out: List[str] = []
    for p in prompts:
        out += mains if is_all(p) else [p]
    return list(dict.fromkeys(out))


def single_label_values(case: CasePrompts, vocabulary) -> Dict[str, int]:
    """Prompt -> label value, for the case's prompts understood (and not blanked) as a single-label
    concept: what a combined label map holds. Group concepts and position prompts are left out."""
    by_id = {c.id: c for c in vocabulary.concepts} if vocabulary is not None else {}
    out = {}
    for p in case.prompts:
        u = case.understood.get(p)
        if p in case.positions or p in case.blank or u is None or not u.get("known", True):
            continue
        concept = by_id.get(u.get("concept"))
        if concept is not None and len(concept.labels) == 1:
            out[p] = concept.labels[0]
    return out


def plan_prompts(predictor, prompts: Sequence[str], understanding: Understanding = Understanding(),
                 cache_file: Optional[Path] = None, encoder_device: str = "cpu") -> PromptPlan:
    """Understand ``prompts`` once for the whole run (``predictor``: a :class:`TextPredictor`); raises a
    :class:`UserInputError` naming the prompt at fault before anything is written."""
    u = understanding
    positions, candidates = plan_position_prompts(list(prompts), predictor.vocabulary)
    network = list(dict.fromkeys(network_prompts(list(prompts), positions, candidates)))
    if not network:
        return PromptPlan([], None, {}, frozenset(), positions, tuple(candidates))
    emb = predictor.embed_prompts(network, cache_file, encoder_device)
    understood = predictor.understand(network, emb, u.min_similarity, cache_file, encoder_device, u.min_margin)
    blank = predictor.prompts_to_empty({p: understood[p] for p in prompts if p in understood}, u.on_unknown,
                                       u.min_similarity, u.min_margin)
    emb = predictor.reword(network, emb, understood, u.wording, cache_file, encoder_device)
    return PromptPlan(network, emb, understood, frozenset(blank), positions, tuple(candidates))
