"""What each case's source dataset annotates: the partial-label record of a merged dataset.

``nnUNetv2_text_merge`` writes ``sources.json`` next to ``dataset.json`` (format in docs/MERGING.md)::

    {"format": "nnunetv2_text.sources", "version": 1,
     "sources": {"<source>": {"dataset": "Dataset501_Kidney", "annotated_concepts": ["kidney_left", ...],
                              "label_map": {"<source label value>": <merged label value>, ...}}},
     "cases": {"<merged case id>": "<source>", ...}}

A concept is annotated by a source when every label value of the concept is one the source labels.
Training draws prompts for a case only from its source's annotated concepts, and the validation and
``nnUNetv2_text_evaluate`` score a concept only on cases whose source annotates it: a structure that a
source leaves unlabelled is unknown there, not absent. A dataset without ``sources.json`` annotates all
its concepts on every case.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, FrozenSet, Iterable, List, Optional, Union

from nnunetv2_text.errors import UserInputError

SOURCES_FILE = "sources.json"
FORMAT = "nnunetv2_text.sources"


@dataclass(frozen=True)
class CaseSources:
    """case id -> source, and source -> annotated concept ids."""

    sources: Dict[str, dict]
    cases: Dict[str, str]

    def source_of(self, case: str) -> str:
        try:
            return self.cases[case]
        except KeyError:
            raise UserInputError(f"case '{case}' is not listed in {SOURCES_FILE}") from None

    def annotated(self, case: str) -> FrozenSet[str]:
        """Concept ids annotated in this case (its source's)."""
        return frozenset(self.sources[self.source_of(case)]["annotated_concepts"])

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": 1, "sources": self.sources, "cases": self.cases}


def parse_sources(obj: dict, source: str) -> CaseSources:
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise UserInputError(f"{source}: not a sources file (expected \"format\": \"{FORMAT}\")")
    sources, cases = obj.get("sources"), obj.get("cases")
    if not isinstance(sources, dict) or not isinstance(cases, dict):
        raise UserInputError(f"{source}: needs the objects \"sources\" and \"cases\"")
    for name, s in sources.items():
        if not isinstance(s.get("annotated_concepts"), list):
            raise UserInputError(f"{source}: source '{name}' has no list \"annotated_concepts\"")
    for case, s in cases.items():
        if s not in sources:
            raise UserInputError(f"{source}: case '{case}' names source '{s}', which is not listed")
    return CaseSources(sources, cases)


def load_sources(path: Union[str, Path]) -> Optional[CaseSources]:
    """The sources file at ``path``, or None when there is none (a plain, fully annotated dataset)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserInputError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
    return parse_sources(obj, str(path))


def annotated_concepts(concepts: Iterable, labelled_values: Iterable[int]) -> List[str]:
    """Ids of the concepts all of whose label values are in ``labelled_values``."""
    values = set(labelled_values)
    return [c.id for c in concepts if set(c.labels) <= values]
