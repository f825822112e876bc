"""Prompt sampling and per-prompt targets for text-conditioned training.

For each sample of a batch: ``num_positive`` concepts present in the sampled patch and ``num_negative``
absent ones (their target is empty: the model must learn to say "not here"). Each prompt uses the main
term with probability ``main_term_probability`` and a random synonym otherwise (VoxTell: 25 % / 75 %).
When a patch has too few present (or absent) concepts the remaining slots take the other kind, so
every sample gets ``num_prompts`` prompts, or every concept of a smaller vocabulary, and all samples of a
batch get as many.

With ``foreign_probability`` a sample gets a foreign prompt: one that names nothing the dataset labels
(see :mod:`nnunetv2_text.text.foreign`), with an empty target, so the model learns that an unknown prompt
is answered with nothing. It takes the place of the sample's absent concept; a sample whose patch shows
every concept it is prompted with gets it as an extra prompt instead, and the batch's other samples repeat
one of their present concepts to match. So a foreign prompt never displaces a present structure (a present
structure is what the model must learn to segment; every MNI152 patch and toy patches with all three
shapes have no absent concept), and never adds an empty target to a sample that already has one (an extra
empty-target prompt in every sample made the toy's thin rod collapse to empty masks; docs/RESULTS.md).
``foreign_replaces_present`` restores the earlier rule, which always replaced the last prompt.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Set, Tuple

import numpy as np
import torch

from nnunetv2_text.text.vocabulary import Vocabulary


@dataclass
class PromptBatch:
    term_ids: torch.Tensor      # (B, N) long: rows of the embedding table
    concept_ids: torch.Tensor   # (B, N) long: index into vocabulary.concepts
    positive: torch.Tensor      # (B, N) bool


class ConceptTargets:
    """Turns label maps into one binary mask per (sample, prompt) with a concept x label lookup table.

    Concept id ``len(vocabulary.concepts)`` (:func:`foreign_concept_id`) is a foreign prompt: an empty row."""

    def __init__(self, vocabulary: Vocabulary, device: torch.device):
        max_label = max(vocabulary.label_values())
        table = torch.zeros(len(vocabulary.concepts) + 1, max_label + 1, dtype=torch.bool)
        for i, c in enumerate(vocabulary.concepts):
            table[i, list(c.labels)] = True
        self.table = table.to(device)

    def __call__(self, seg: torch.Tensor, concept_ids: torch.Tensor) -> torch.Tensor:
        """seg (B, 1, *spatial) label values; concept_ids (B, N) -> (B, N, *spatial) float {0, 1}."""
        seg = seg[:, 0].long().clamp(0, self.table.shape[1] - 1)  # labels outside the vocabulary: background
        rows = self.table[concept_ids.to(self.table.device)]       # (B, N, L)
        b, n = concept_ids.shape
        spatial = seg.shape[1:]
        bi = torch.arange(b, device=seg.device).view(b, 1, *([1] * len(spatial)))
        ni = torch.arange(n, device=seg.device).view(1, n, *([1] * len(spatial)))
        return rows[bi, ni, seg[:, None]].float()


def foreign_concept_id(vocabulary: Vocabulary) -> int:
    """The concept id that foreign prompts carry (one past the vocabulary's concepts; its target is empty)."""
    return len(vocabulary.concepts)


class PromptSampler:
    def __init__(self, vocabulary: Vocabulary, terms: Sequence[str], num_positive: int = 2,
                 num_negative: int = 1, main_term_probability: float = 0.25, seed=None,
                 foreign: Sequence[str] = (), foreign_probability: float = 0.0,
                 foreign_replaces_present: bool = False):
        index = {t: i for i, t in enumerate(terms)}
        self.foreign_ids = [index[t] for t in foreign]
        self.foreign_probability = foreign_probability if self.foreign_ids else 0.0
        self.foreign_replaces_present = foreign_replaces_present
        self.vocabulary = vocabulary
        self.main_ids = [index[c.main] for c in vocabulary.concepts]
        self.synonym_ids = [[index[s] for s in c.synonyms] for c in vocabulary.concepts]
        self.concept_labels = [set(c.labels) for c in vocabulary.concepts]
        self.num_positive, self.num_negative = num_positive, num_negative
        self.main_term_probability = main_term_probability
        self.rng = np.random.default_rng(seed)

    @property
    def num_prompts(self) -> int:
        """Prompts per sample before a foreign prompt is added (a batch may carry one more)."""
        return self.num_positive + self.num_negative

    def present_concepts(self, labels_present: set) -> List[int]:
        return [i for i, ls in enumerate(self.concept_labels) if ls & labels_present]

    def _pick(self, pool: List[int], k: int) -> List[int]:
        return list(self.rng.choice(pool, size=k, replace=False)) if k else []

    def sample_concepts(self, labels_present: set, annotated: Optional[Set[int]] = None
                        ) -> Tuple[List[int], List[bool]]:
        """Concept ids and positivity of one sample's prompts.

        ``annotated``: the concepts the sample's source labels (partial labels, see
        :mod:`nnunetv2_text.text.sources`); only they are prompted, because a structure the source leaves
        unlabelled may be in the patch although its label map shows background. Slots that the annotated
        concepts cannot fill repeat a chosen concept (its own term is drawn again), present ones first;
        only a case with no chosen concept at all gets foreign prompts there. Filling with foreign prompts
        instead put an empty target into nearly every sample of a merged toy, and its rod collapsed to
        empty masks (docs/RESULTS.md)."""
        allowed = range(len(self.concept_labels)) if annotated is None else sorted(annotated)
        pos = [i for i in self.present_concepts(labels_present) if i in set(allowed)]
        neg = [i for i in allowed if i not in set(pos)]
        # a vocabulary with fewer concepts than prompts per sample prompts every concept, once (a partially
        # labelled case is padded to as many; padding it to the shared decoder's 193 made a merged toy's
        # step many times slower for repeats of the same few concepts)
        want = min(self.num_prompts, len(self.concept_labels))
        n_pos = min(self.num_positive, len(pos))
        n_neg = min(want - n_pos, len(neg))
        n_pos = min(want - n_neg, len(pos))
        chosen = self._pick(pos, n_pos) + self._pick(neg, n_neg)
        positive = [True] * n_pos + [False] * n_neg
        if len(chosen) < want and annotated is not None:
            if not chosen and not self.foreign_ids:
                raise ValueError("a case's source annotates no concept of the vocabulary")
            if not chosen:
                chosen.append(foreign_concept_id(self.vocabulary))
                positive.append(False)
            self._pad(chosen, positive, want)
        if self.foreign_probability and self.rng.random() < self.foreign_probability:
            if self.foreign_replaces_present:
                chosen[-1], positive[-1] = foreign_concept_id(self.vocabulary), False
            elif all(positive):  # every prompt names a present concept
                chosen.append(foreign_concept_id(self.vocabulary))
                positive.append(False)
            else:  # the last absent one (partial-label fills may put present repeats after it)
                k = max(i for i, p in enumerate(positive) if not p)
                chosen[k] = foreign_concept_id(self.vocabulary)
        return chosen, positive

    def _pad(self, chosen: List[int], positive: List[bool], n: int) -> None:
        """Repeat chosen concepts until the sample has ``n`` prompts (a batch's samples need as many
        prompts each): a present one, so padding adds no empty target; only a patch with no present
        concept repeats an absent one, and a foreign prompt is never repeated while anything else is there."""
        foreign = foreign_concept_id(self.vocabulary)
        pool = ([k for k, p in enumerate(positive) if p] or [k for k, c in enumerate(chosen) if c != foreign]
                or list(range(len(chosen))))
        while len(chosen) < n:
            k = pool[int(self.rng.integers(len(pool)))]
            chosen.append(chosen[k])
            positive.append(positive[k])

    def term_for(self, concept: int) -> int:
        if concept == foreign_concept_id(self.vocabulary):
            return self.foreign_ids[self.rng.integers(len(self.foreign_ids))]
        if self.rng.random() < self.main_term_probability or not self.synonym_ids[concept]:
            return self.main_ids[concept]
        syn = self.synonym_ids[concept]
        return syn[self.rng.integers(len(syn))]

    def sample(self, seg: torch.Tensor, annotated: Optional[Sequence[Optional[Set[int]]]] = None) -> PromptBatch:
        """seg (B, 1, *spatial): the full-resolution label patch of each sample; ``annotated``: per sample
        the concept ids its source labels (None: all)."""
        concepts, positive = [], []
        for b in range(seg.shape[0]):
            present = set(int(v) for v in torch.unique(seg[b]).tolist() if v > 0)
            c, p = self.sample_concepts(present, None if annotated is None else annotated[b])
            concepts.append(c)
            positive.append(p)
        n = max(len(c) for c in concepts)
        for c, p in zip(concepts, positive):
            self._pad(c, p, n)
        terms = [[self.term_for(i) for i in c] for c in concepts]
        return PromptBatch(torch.tensor(terms, dtype=torch.long), torch.tensor(concepts, dtype=torch.long),
                           torch.tensor(positive, dtype=torch.bool))
