"""Prompts that name no anatomy: "the largest structure", "the left-most one", "the upper-most organ".

Answered by composition, not learned: the model predicts every single-label concept of its vocabulary
(one batched decoder pass, as for any prompts), and the answer is the concept whose predicted mask is
largest or smallest in mm³, or whose centroid lies furthest in a patient direction (LPS world mm, so
the answer does not depend on how the scan is stored). Why composition: it needs no extra training
signal, it is exact wherever the per-concept masks are, and it sees the whole image after the sliding
window (a learned answer sees one patch, where "largest" is often not visible); docs/RESULTS.md has the
measurement. Its limits: it can only pick among the single-label concepts the model learned, a false
positive blob of another concept can win, and it compares centroids, not extreme points.

Fewer than two candidates present gives an empty mask with a flag, never a pick between nothing.
"""
from __future__ import annotations

import json
import re
from importlib import resources
from typing import Dict, List, Optional, Sequence, Tuple

from nnunetv2_text.errors import UserInputError

#: relation -> (summary field, world axis or None, +1: the largest value wins, -1: the smallest)
CRITERIA = {
    "largest": ("volume_mm3", None, +1), "smallest": ("volume_mm3", None, -1),
    "left": ("centroid_mm", 0, +1), "right": ("centroid_mm", 0, -1),          # LPS: +x is the patient's left
    "posterior": ("centroid_mm", 1, +1), "anterior": ("centroid_mm", 1, -1),  # +y posterior
    "superior": ("centroid_mm", 2, +1), "inferior": ("centroid_mm", 2, -1),   # +z superior
}
#: a concept whose predicted mask is smaller than this many voxels is not counted as present
MIN_CANDIDATE_VOXELS = 10
FLAG_TOO_FEW = "fewer_than_two_candidates"


def _normalise(text: str) -> str:
    text = text.lower().replace("’", "'")
    text = re.sub(r"[^a-z0-9\- ]+", " ", text)
    words = [w for w in text.split() if w not in ("the", "a", "an", "please", "segment", "show", "find")]
    return " ".join(words)


def _phrase_table() -> Dict[str, str]:
    data = json.loads(resources.files("nnunetv2_text.vocab").joinpath("position_prompts.json").read_text("utf-8"))
    table = {}
    for relation, spec in data["relations"].items():
        phrases = list(spec.get("phrases", []))
        for adj in spec["adjectives"]:
            phrases += [f"{adj} {noun}" for noun in data["nouns"]]
            phrases += [f"{adj} {noun}s" for noun in data["nouns"]] if adj.endswith("est") else []
        for p in phrases:
            key = _normalise(p)
            if table.get(key, relation) != relation:
                raise ValueError(f"position_prompts.json: '{p}' means both {table[key]} and {relation}")
            table[key] = relation
    return table


_TABLE: Optional[Dict[str, str]] = None


def position_relation(prompt: str) -> Optional[str]:
    """The relation a prompt asks for ("largest", "left", ...), or None for a prompt that names anatomy."""
    global _TABLE
    if _TABLE is None:
        _TABLE = _phrase_table()
    return _TABLE.get(_normalise(prompt))


def candidate_concepts(vocabulary) -> List[Tuple[str, str]]:
    """(concept id, main term) of the concepts a position prompt chooses among: the single-label ones."""
    if vocabulary is None:  # an open-vocabulary import: no concepts to choose among
        return []
    return [(c.id, c.main) for c in vocabulary.concepts if len(c.labels) == 1]


def plan_position_prompts(prompts: Sequence[str], vocabulary) -> Tuple[Dict[str, str], List[Tuple[str, str]]]:
    """(position prompt -> relation, the (concept, main term) candidates they choose among) for a set of
    prompts; a position prompt on a model with fewer than two single-label concepts is refused."""
    positions = {q: r for q in dict.fromkeys(prompts) if (r := position_relation(q)) is not None}
    candidates = candidate_concepts(vocabulary) if positions else []
    if positions and len(candidates) < 2:
        raise UserInputError(f"prompt '{next(iter(positions))}' chooses among the model's single-label "
                             f"concepts, and it has {len(candidates)}")
    return positions, candidates


def network_prompts(prompts: Sequence[str], positions: Dict[str, str],
                    candidates: Sequence[Tuple[str, str]]) -> List[str]:
    """What the network runs for these prompts: the anatomy prompts, and, when any of them is a position
    prompt, every candidate's main term (its answer is chosen among their masks)."""
    asks_position = any(q in positions for q in prompts)
    return list(dict.fromkeys([q for q in prompts if q not in positions]
                              + ([m for _, m in candidates] if asks_position else [])))


def choose(relation: str, summaries: Dict[str, dict]) -> Tuple[Optional[str], dict]:
    """The concept that satisfies ``relation`` among ``summaries`` ({concept: {"voxels", "volume_mm3",
    "centroid_mm"}} of the predicted masks), and the manifest's record of why."""
    field, axis, sign = CRITERIA[relation]
    present = {c: s for c, s in summaries.items() if s["voxels"] >= MIN_CANDIDATE_VOXELS}
    why = {"relation": relation,
           "criterion": "volume (mm³)" if axis is None else f"centroid world {'xyz'[axis]} (LPS mm)",
           "candidates": {c: {"volume_mm3": s["volume_mm3"], "centroid_mm": s["centroid_mm"]}
                          for c, s in present.items()},
           "chosen": None, "flag": None}
    if len(present) < 2:
        why["flag"] = FLAG_TOO_FEW
        return None, why

    def value(c: str) -> float:
        v = present[c][field]
        return sign * (v if axis is None else v[axis])

    ranked = sorted(present, key=value, reverse=True)
    why["chosen"] = ranked[0]
    why["margin"] = round(float(value(ranked[0]) - value(ranked[1])), 3)  # over the runner-up, mm³ or mm
    return ranked[0], why
