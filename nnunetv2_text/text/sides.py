"""Which side of the body a prompt names, read from its words rather than from its embedding.

Sentence encoders are weak at laterality: with the bundled MiniLM, "the right side's grey matter" lies
nearer "left grey matter" than any right-sided term, and "grey matter, right" nearer the bilateral
"grey matter" (6 of 80 held-out MNI152 paraphrases, docs/RESULTS.md). A side word is unambiguous text,
so the nearest-term search is restricted to concepts whose side agrees with the prompt's; similarity
still decides everything else. The image side of the same rule is ``utils/laterality.py``.
"""
from __future__ import annotations

from collections import Counter
from typing import Dict, List, Optional, Sequence

from nnunetv2_text.text.vocabulary import Concept, Vocabulary, word_tokens

#: lower-cased words that name a side (English, abbreviations as in the shipped vocabularies, Latin)
SIDE_WORDS: Dict[str, frozenset] = {
    "left": frozenset({"left", "lt", "l", "sinister", "sinistra", "sinistrum", "sinistri", "sinistrae"}),
    "right": frozenset({"right", "rt", "r", "dexter", "dextra", "dextrum", "dextri", "dextrae"}),
    "both": frozenset({"bilateral", "both"}),
}
#: the concept sides a prompt of each side may be understood as (a side-less concept: any prompt)
COMPATIBLE = {"left": ("left", None), "right": ("right", None), "both": ("both", None)}


def prompt_side(text: str) -> Optional[str]:
    """'left', 'right', 'both' (both sides named, or "bilateral"/"both" without a side: "both left lung
    lobes" is the left lung), or None when the text names no side."""
    words = set(word_tokens(text))
    named = {side for side, vocab in SIDE_WORDS.items() if words & vocab}
    if {"left", "right"} <= named:
        return "both"
    return next((s for s in ("left", "right", "both") if s in named), None)


def concept_side(concept: Concept) -> Optional[str]:
    """The side a concept's terms name (the most frequent, if they differ): one side, 'both' (a bilateral
    concept: "bilateral gray matter"), or None (a midline or unpaired structure, or a vocabulary that
    never names sides)."""
    named = Counter(s for s in map(prompt_side, concept.terms) if s is not None)
    return named.most_common(1)[0][0] if named else None


def vocabulary_sides(vocabulary: Vocabulary) -> Dict[str, Optional[str]]:
    """Each concept's side (:func:`concept_side`); a concept whose terms name no side but whose labels
    cover both a left and a right concept's is 'both' ("kidneys", "whole brain"): a left prompt must not
    be understood as it."""
    side_of = {c.id: concept_side(c) for c in vocabulary.concepts}
    labels = {s: {v for c in vocabulary.concepts if side_of[c.id] == s for v in c.labels} for s in ("left", "right")}
    for c in vocabulary.concepts:
        if side_of[c.id] is None and labels["left"] & set(c.labels) and labels["right"] & set(c.labels):
            side_of[c.id] = "both"
    return side_of


def side_consistent_term(prompt: str, similarities: Sequence[float], terms: List[str],
                         vocabulary: Vocabulary) -> int:
    """Index into ``terms`` of the prompt's nearest term among the concepts its side allows.

    A prompt naming one side is never understood as the other side's concept or a bilateral one; a
    prompt naming no side whose nearest term is one-sided is understood as the bilateral concept that
    contains it, when the vocabulary has one ("cerebral gray matter" is all grey matter, not the right
    one). Without side-compatible terms (a vocabulary without sides), the nearest term overall."""
    own = vocabulary.lookup(prompt)
    if own is not None:  # a vocabulary term is its own concept, whatever its words say
        return max((i for i, t in enumerate(terms) if vocabulary.lookup(t) is own), key=lambda i: similarities[i])
    concept_of = [vocabulary.lookup(t) for t in terms]
    side_of = vocabulary_sides(vocabulary)
    order = sorted(range(len(terms)), key=lambda i: -float(similarities[i]))
    side = prompt_side(prompt)
    if side is None:
        best = concept_of[order[0]]
        if side_of[best.id] not in ("left", "right"):
            return order[0]
        wider = {c.id for c in vocabulary.concepts if side_of[c.id] == "both" and set(best.labels) < set(c.labels)}
        return next((i for i in order if concept_of[i].id in wider), order[0])
    return next((i for i in order if side_of[concept_of[i].id] in COMPATIBLE[side]), order[0])
