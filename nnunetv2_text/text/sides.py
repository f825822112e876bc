"""Which side of the body a prompt names, read from its words rather than from its embedding.

Sentence encoders are weak at laterality: with the bundled MiniLM, "the right side's grey matter" lies
nearer "left grey matter" than any right-sided term, and "grey matter, right" nearer the bilateral
"grey matter" (7 of 80 held-out MNI152 paraphrases lost, gained or swapped their side,
docs/RESULTS.md). A side word is unambiguous text, so the nearest-term search is restricted to
concepts whose side agrees with the prompt's; similarity still decides everything else. The image side
of the same rule is ``utils/laterality.py``.
"""
from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence

from nnunetv2_text.text.vocabulary import Concept, Vocabulary, word_tokens

#: lower-cased words that name a side: English, the abbreviations of the shipped vocabularies, Latin, and
#: the commonest German, French, Spanish and Italian forms (a side word the rule misses would send a
#: one-sided prompt to the bilateral concept)
SIDE_WORDS: Dict[str, frozenset] = {
    "left": frozenset({"left", "lt", "l", "sinister", "sinistra", "sinistrum", "sinistri", "sinistrae", "links",
                       "linke", "linken", "linker", "linkes", "gauche", "izquierdo", "izquierda", "sinistro"}),
    "right": frozenset({"right", "rt", "r", "dexter", "dextra", "dextrum", "dextri", "dextrae", "rechts", "rechte",
                        "rechten", "rechter", "rechtes", "droit", "droite", "derecho", "derecha", "destro",
                        "destra"}),
    "both": frozenset({"bilateral", "both", "beidseits", "beidseitig", "bilatéral", "bilatérale"}),
}
#: the concept sides a prompt naming one side may be understood as (a side-less concept: any prompt)
COMPATIBLE = {"left": ("left", None), "right": ("right", None)}
#: "l"/"r" that are not sides: a vertebra or segment number ("L 1", "R-2"), French elision ("l'artère"),
#: "r/o" (rule out)
_NOT_A_SIDE = re.compile(r"\b[lr][\s\-]*(?=\d)|\bl['’](?=\w)|\br/o\b", re.IGNORECASE)


def prompt_side(text: str) -> Optional[str]:
    """'left', 'right', 'both' (both sides named, or "bilateral"/"both" without a side: "both left lung
    lobes" is the left lung), or None when the text names no side."""
    words = set(word_tokens(_NOT_A_SIDE.sub(" ", text)))
    named = {side for side, vocab in SIDE_WORDS.items() if words & vocab}
    if {"left", "right"} <= named:
        return "both"
    return next((s for s in ("left", "right", "both") if s in named), None)


def vocabulary_sides(vocabulary: Vocabulary) -> Dict[str, Optional[str]]:
    """Each concept's side: the one its main term names (a synonym such as "veins draining into the left
    atrium" must not make a concept left-sided); a concept whose main term names no side but whose labels
    cover both a left and a right concept's is 'both' ("kidneys", "anterior circle of Willis")."""
    side_of = {c.id: prompt_side(c.main) for c in vocabulary.concepts}
    labels = {s: {v for c in vocabulary.concepts if side_of[c.id] == s for v in c.labels} for s in ("left", "right")}
    for c in vocabulary.concepts:
        if side_of[c.id] is None and labels["left"] & set(c.labels) and labels["right"] & set(c.labels):
            side_of[c.id] = "both"
    return side_of


def _both_sides_of(concept: Concept, vocabulary: Vocabulary, side_of: Dict[str, Optional[str]]) -> Optional[str]:
    """The id of the concept that is exactly a one-sided concept and its other-side twin (grey matter for
    right grey matter), or None: a larger union (all five lung lobes for the middle lobe) is not it."""
    other = "right" if side_of[concept.id] == "left" else "left"
    twins = [set(c.labels) for c in vocabulary.concepts if side_of[c.id] == other]
    own = set(concept.labels)
    return next((c.id for c in vocabulary.concepts if side_of[c.id] == "both" and own < set(c.labels)
                 and set(c.labels) - own in twins), None)


def side_consistent_term(prompt: str, similarities: Sequence[float], terms: List[str],
                         vocabulary: Vocabulary, side_of: Optional[Dict[str, Optional[str]]] = None,
                         concept_of: Optional[Sequence[Concept]] = None) -> int:
    """Index into ``terms`` of the prompt's nearest term among the concepts its side allows.

    A prompt naming one side is never understood as the other side's concept or a bilateral one. A prompt
    naming both sides, or none, whose nearest concept is one-sided is understood as that concept with its
    other-side twin, when the vocabulary has exactly that concept ("cerebral gray matter" is all grey
    matter, not the right one); otherwise it keeps its nearest concept. Without side-compatible terms (a
    vocabulary without sides), the nearest term overall. ``side_of`` (:func:`vocabulary_sides`) and
    ``concept_of`` (each term's concept) are computed once by callers that understand many prompts: looking
    every term up again per prompt took 40 % of predicting all 102 regions of an atlas case."""
    concept_of = [vocabulary.lookup(t) for t in terms] if concept_of is None else concept_of
    own = vocabulary.lookup(prompt)
    if own is not None:  # a vocabulary term is its own concept, whatever its words say
        return max((i for i, c in enumerate(concept_of) if c is own), key=lambda i: similarities[i])
    side_of = vocabulary_sides(vocabulary) if side_of is None else side_of
    order = sorted(range(len(terms)), key=lambda i: -float(similarities[i]))
    side = prompt_side(prompt)
    if side in COMPATIBLE:
        return next((i for i in order if side_of[concept_of[i].id] in COMPATIBLE[side]), order[0])
    best = concept_of[order[0]]
    if side_of[best.id] not in ("left", "right"):
        return order[0]
    both = _both_sides_of(best, vocabulary, side_of)
    return next((i for i in order if concept_of[i].id == both), order[0])
