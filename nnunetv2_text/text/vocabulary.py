"""Vocabularies: which words name which labels of a dataset.

File format (JSON, UTF-8; documented for users in ``vocab/README.md``)::

    {
      "format": "nnunetv2_text.vocabulary", "version": 1,
      "name": "TopCoW",
      "concepts": [
        {"id": "BA", "main": "basilar artery",
         "synonyms": ["BA", "basilar trunk", ...],          # >= 5 synonyms or rephrasings
         "labels": [1]},                                    # label values or label names of dataset.json
        {"id": "posterior_circulation", "main": "posterior circulation", "synonyms": [...],
         "labels": [2, 3, 8, 9]}                            # a union: several labels
      ]
    }

Terms are matched case- and whitespace-insensitively (:func:`normalize_term`), so one term may name
exactly one concept. JSON, never pickle: vocabularies travel between sites.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from nnunetv2_text.errors import UserInputError

logger = logging.getLogger(__name__)

FORMAT = "nnunetv2_text.vocabulary"
MIN_SYNONYMS = 5


class VocabularyError(UserInputError):
    """A vocabulary is malformed or does not fit its dataset; the message names file and key."""


def normalize_term(text: str) -> str:
    """Lower-case, strip, collapse whitespace: 'Left  Kidney ' and 'left kidney' are one term."""
    return re.sub(r"\s+", " ", text.strip()).lower()


def word_tokens(text: str) -> Tuple[str, ...]:
    """Lower-case words and numbers of a text, punctuation dropped: the unit :meth:`Vocabulary.mentions` matches."""
    return tuple(re.findall(r"[^\W_]+", text.casefold()))


@dataclass(frozen=True)
class Concept:
    """One promptable structure: a main term, its synonyms and the label values it covers."""

    id: str
    main: str
    synonyms: Tuple[str, ...]
    labels: Tuple[int, ...]

    @property
    def terms(self) -> Tuple[str, ...]:
        """Main term first, then the synonyms."""
        return (self.main,) + self.synonyms


@dataclass
class Vocabulary:
    name: str
    concepts: List[Concept]
    source: str = "<memory>"
    _by_term: Dict[str, Concept] = field(default_factory=dict, repr=False)
    _token_terms: Optional[Dict[Tuple[str, ...], Concept]] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        ids = set()
        for c in self.concepts:
            if c.id in ids:
                raise VocabularyError(f"{self.source}: concept id '{c.id}' appears twice")
            ids.add(c.id)
            for t in c.terms:
                key = normalize_term(t)
                other = self._by_term.get(key)
                if other is not None and other.id != c.id:
                    raise VocabularyError(
                        f"{self.source}: term '{t}' is mapped to two concepts: '{other.id}' and '{c.id}'")
                self._by_term[key] = c

    # ---------------------------------------------------------------- lookup
    def concept(self, concept_id: str) -> Concept:
        for c in self.concepts:
            if c.id == concept_id:
                return c
        raise KeyError(f"{self.source}: no concept with id '{concept_id}'")

    def lookup(self, term: str) -> Optional[Concept]:
        """The concept a term names, or None when the vocabulary does not know the term."""
        return self._by_term.get(normalize_term(term))

    def mentions(self, text: str) -> List[Concept]:
        """The concepts a sentence names ("Widen the right ICA." -> R-ICA), in order of appearance.

        A refinement instruction scopes its edit by the vessels it names. Terms are matched as whole
        words, ignoring case and punctuation ("R-PCA" = "R PCA"), longest term first, so "left PCA" is
        not also read as a shorter term inside it. A word sequence shared by two concepts names neither.
        """
        if self._token_terms is None:
            table: Dict[Tuple[str, ...], Optional[Concept]] = {}
            for c in self.concepts:
                for t in c.terms:
                    key = word_tokens(t)
                    if key:
                        table[key] = c if table.get(key, c) is c else None
            self._token_terms = {k: c for k, c in table.items() if c is not None}
        words, found, i = word_tokens(text), [], 0
        longest = max((len(k) for k in self._token_terms), default=0)
        while i < len(words):
            for n in range(min(longest, len(words) - i), 0, -1):
                c = self._token_terms.get(tuple(words[i:i + n]))
                if c is not None:
                    if c not in found:
                        found.append(c)
                    i += n
                    break
            else:
                i += 1
        return found

    def all_terms(self) -> List[str]:
        """Every term of every concept, in file order, without duplicates."""
        seen, out = set(), []
        for c in self.concepts:
            for t in c.terms:
                if t not in seen:
                    seen.add(t)
                    out.append(t)
        return out

    def label_values(self) -> List[int]:
        return sorted({v for c in self.concepts for v in c.labels})

    # ---------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": 1,
            "name": self.name,
            "concepts": [
                {"id": c.id, "main": c.main, "synonyms": list(c.synonyms), "labels": list(c.labels)}
                for c in self.concepts
            ],
        }

    def sha256(self) -> str:
        """Content hash recorded in checkpoints: a model knows which vocabulary it was trained with."""
        blob = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()


def _label_name_to_value(dataset_labels: Mapping[str, Union[int, Sequence[int]]]) -> Dict[str, int]:
    out = {}
    for name, value in dataset_labels.items():
        if isinstance(value, (list, tuple)):
            raise VocabularyError(
                f"dataset.json label '{name}' is a region {value}; text models need plain labels "
                "(express unions in the vocabulary instead)")
        out[name] = int(value)
    return out


def _concept_labels(c: dict, where: str, names: Optional[Dict[str, int]], dropped: set, source: str
                    ) -> Optional[List[int]]:
    """A concept's label values, its names resolved with ``names`` (None: the dataset's labels are unknown);
    None when the concept is to be skipped for this dataset (see :func:`parse_vocabulary`)."""
    labels = c["labels"]
    if isinstance(labels, (int, str)):
        labels = [labels]
    if not labels:
        raise VocabularyError(f"{where}: 'labels' is empty")
    values, missing = [], []
    for lab in labels:
        if isinstance(lab, str):
            if names is None:
                raise VocabularyError(f"{where}: label name '{lab}' needs the dataset's labels to resolve")
            if lab not in names:
                if lab not in dropped:
                    missing.append(lab)
                continue
            values.append(names[lab])
        elif isinstance(lab, int) and not isinstance(lab, bool):
            values.append(int(lab))
        else:
            raise VocabularyError(f"{where}: label {lab!r} is neither a label value nor a label name")
    if missing:
        # label names make a shipped vocabulary portable: a dataset with a subset of its structures
        # simply does not get the concepts it lacks (validate_against_dataset still demands that
        # every label of the dataset is named, so a typo cannot go unnoticed)
        logger.info("%s: skipping concept '%s' (labels %s not in the dataset)", source, c["id"], missing)
        return None
    if not values or (len(values) == 1 < len(labels)):
        # all its labels dropped, or a union left with one label: that region's own concept says it
        logger.info("%s: skipping concept '%s' (its labels were dropped from the dataset)", source, c["id"])
        return None
    return values


def parse_vocabulary(obj: dict, source: str = "<memory>",
                     dataset_labels: Optional[Mapping[str, Union[int, Sequence[int]]]] = None,
                     dropped_labels: Iterable[str] = ()) -> Vocabulary:
    """Build a :class:`Vocabulary` from its JSON object, resolving label names with ``dataset_labels``.

    ``dropped_labels``: label names the dataset left out on purpose (``dataset.json`` ``"dropped_regions"``,
    e.g. an atlas region too small at the chosen spacing). A union keeps its other labels ("vermis"
    without its smallest part is still the vermis the dataset has); a concept with no label left, or a union
    left with a single label (that region's own concept already names it), is skipped.
    Any other missing name skips the whole concept, because a union of only some of its structures would
    answer for more than the dataset labels.

    Raises :class:`VocabularyError` naming ``source`` and the concept at fault.
    """
    if not isinstance(obj, dict) or not isinstance(obj.get("concepts"), list):
        raise VocabularyError(f"{source}: expected an object with a 'concepts' list")
    if obj.get("format", FORMAT) != FORMAT:
        raise VocabularyError(f"{source}: format is '{obj.get('format')}', expected '{FORMAT}'")
    names = _label_name_to_value(dataset_labels) if dataset_labels is not None else {}
    dropped = set(dropped_labels)
    concepts = []
    for i, c in enumerate(obj["concepts"]):
        where = f"{source}: concept #{i}" + (f" ('{c.get('id')}')" if isinstance(c, dict) and "id" in c else "")
        if not isinstance(c, dict):
            raise VocabularyError(f"{where}: expected an object")
        for key in ("id", "main", "synonyms", "labels"):
            if key not in c:
                raise VocabularyError(f"{where}: missing key '{key}'")
        if not isinstance(c["main"], str) or not c["main"].strip():
            raise VocabularyError(f"{where}: 'main' must be a non-empty string")
        syns = c["synonyms"]
        if not isinstance(syns, list) or not all(isinstance(s, str) and s.strip() for s in syns):
            raise VocabularyError(f"{where}: 'synonyms' must be a list of non-empty strings")
        if len(syns) < MIN_SYNONYMS:
            raise VocabularyError(f"{where}: needs at least {MIN_SYNONYMS} synonyms, has {len(syns)}")
        values = _concept_labels(c, where, names if dataset_labels is not None else None, dropped, source)
        if values is None:
            continue
        concepts.append(Concept(str(c["id"]), c["main"].strip(), tuple(s.strip() for s in syns),
                                tuple(sorted(set(values)))))
    return Vocabulary(name=str(obj.get("name", Path(source).stem)), concepts=concepts, source=source)


def validate_against_dataset(vocab: Vocabulary, dataset_labels: Mapping[str, Union[int, Sequence[int]]],
                             ignore_label_names: Iterable[str] = ("ignore",)) -> None:
    """Every label value must be a real foreground label, and every foreground label must be named.

    A label nobody can prompt would silently never be trained, so it is an error, as is a concept that
    points at a label the dataset does not have.
    """
    values = _label_name_to_value(dataset_labels)
    ignore = {v for k, v in values.items() if k in set(ignore_label_names)}
    foreground = {v: k for k, v in values.items() if v != 0 and v not in ignore}
    for c in vocab.concepts:
        for v in c.labels:
            if v not in foreground:
                raise VocabularyError(
                    f"{vocab.source}: concept '{c.id}' uses label {v}, which is not a foreground label of the "
                    f"dataset (labels: {sorted(foreground)})")
    single = {c.labels[0] for c in vocab.concepts if len(c.labels) == 1}
    for v, name in sorted(foreground.items()):
        if v not in single:
            raise VocabularyError(
                f"{vocab.source}: label {v} ('{name}') has no vocabulary entry (a concept with labels [{v}])")


def shipped_vocabularies() -> List[str]:
    """Names of the vocabularies installed with the package (the ``vocab/`` folder)."""
    names = []
    for p in resources.files("nnunetv2_text.vocab").iterdir():
        # other shipped data (e.g. foreign_prompts.json) says so in its "format"
        if p.name.endswith(".json") and json.loads(p.read_text(encoding="utf-8")).get("format", FORMAT) == FORMAT:
            names.append(p.name[:-5])
    return sorted(names)


def resolve_vocabulary_path(name_or_path: Union[str, Path], base_dir: Optional[Path] = None) -> Path:
    """A path (absolute, or relative to ``base_dir``) or the name of a shipped vocabulary."""
    p = Path(name_or_path)
    candidates = [p] if p.is_absolute() else ([base_dir / p] if base_dir is not None else []) + [p]
    for cand in candidates:
        if cand.is_file():
            return cand
    shipped = resources.files("nnunetv2_text.vocab") / f"{name_or_path}.json"
    if shipped.is_file():
        return Path(str(shipped))
    raise VocabularyError(
        f"vocabulary '{name_or_path}' is neither a file nor a shipped vocabulary ({', '.join(shipped_vocabularies())})")


def load_vocabulary(path: Union[str, Path],
                    dataset_labels: Optional[Mapping[str, Union[int, Sequence[int]]]] = None,
                    dropped_labels: Iterable[str] = ()) -> Vocabulary:
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VocabularyError(f"{path}: vocabulary file not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise VocabularyError(f"{path}: not valid UTF-8 JSON ({e})") from None
    return parse_vocabulary(obj, source=str(path), dataset_labels=dataset_labels, dropped_labels=dropped_labels)
