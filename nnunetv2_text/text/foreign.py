"""Foreign prompts: texts that name nothing a dataset labels, taught during training to give an empty mask.

Without them a text model answers every prompt with some structure it knows ("Hello World" returned the
toy's rod, abdominal organs returned the whole brain). The pool is data shipped with the package: the
generic phrases of ``vocab/foreign_prompts.json`` and every term of the shipped vocabularies (the brain
atlas's excepted, :data:`POOL_VOCABULARIES`). A pool term
is left out for a dataset when its vocabulary resolves the term, or when one of the two contains the other
word by word ("brain" vs "left brain", "pipe" vs "food pipe"): such a term may well name something the
dataset's images show, and teaching "not here" for it would be wrong.

A term whose embedding is too close to one of the dataset's terms is left out as well
(:func:`drop_close_to_vocabulary`). ``nnUNetv2_text_embed`` writes the dataset's pool to
``text/foreign_prompts.json`` and embeds it into the cache, so training still never loads the text encoder.
"""
from __future__ import annotations

import json
from importlib import resources
from typing import Iterable, List, Sequence

import numpy as np

from nnunetv2_text.text.vocabulary import Vocabulary, normalize_term, shipped_vocabularies

FOREIGN_FILE = "foreign_prompts.json"
FORMAT = "nnunetv2_text.foreign_prompts"


def _shipped_json(name: str) -> dict:
    return json.loads(resources.files("nnunetv2_text.vocab").joinpath(name).read_text(encoding="utf-8"))


def generic_foreign_prompts() -> List[str]:
    """The shipped phrases that name no anatomy at all: the listed ones and every adjective-object pair
    (as many everyday phrases as there are anatomy terms, so unknown means more than "another organ")."""
    d = _shipped_json(FOREIGN_FILE)
    return list(d["generic"]) + [f"{a} {o}" for a in d.get("adjectives", []) for o in d.get("objects", [])]


#: the shipped vocabularies whose terms join the pool. Not the brain atlas: its 1,800 region names would
#: outnumber every other source, and most name parts of what the MNI152 grey-matter labels cover, where
#: "not here" would be a wrong lesson
POOL_VOCABULARIES = ("mni152", "topcow", "totalsegmentator", "toy_shapes")


def shipped_vocabulary_terms() -> List[str]:
    """Every term of the shipped vocabularies in :data:`POOL_VOCABULARIES` (read as JSON: label names need
    no dataset here)."""
    out = []
    for name in (n for n in shipped_vocabularies() if n in POOL_VOCABULARIES):
        for c in _shipped_json(f"{name}.json")["concepts"]:
            out += [c["main"], *c.get("synonyms", [])]
    return out


def _contains_words(longer: Sequence[str], shorter: Sequence[str]) -> bool:
    n = len(shorter)
    return any(list(longer[i:i + n]) == list(shorter) for i in range(len(longer) - n + 1))


def foreign_prompt_pool(vocabulary: Vocabulary, candidates: Iterable[str] = ()) -> List[str]:
    """The pool for one dataset: ``candidates`` (default: generic phrases + shipped vocabulary terms) minus
    every term the vocabulary resolves or that shares a whole-word span with one of its terms."""
    candidates = list(candidates) or generic_foreign_prompts() + shipped_vocabulary_terms()
    own = [normalize_term(t).split() for t in vocabulary.all_terms()]
    pool, seen = [], set()
    for t in candidates:
        key = normalize_term(t)
        if not key or key in seen or vocabulary.lookup(t) is not None:
            continue
        words = key.split()
        if any(_contains_words(words, o) or _contains_words(o, words) for o in own):
            continue
        seen.add(key)
        pool.append(t)
    return pool


#: a pool term at least this similar to one of the dataset's own terms (cosine, after centring on their
#: mean as the network does) is left out too: the network could hardly tell it from a concept it must
#: segment, and teaching it "not here" pulls that concept towards empty masks ("windpipe" vs the toy's
#: "pipe": 0.60; docs/RESULTS.md)
MAX_POOL_SIMILARITY = 0.4


def drop_close_to_vocabulary(pool: Sequence[str], pool_embeddings: np.ndarray, vocabulary_embeddings: np.ndarray,
                             max_similarity: float = MAX_POOL_SIMILARITY) -> List[str]:
    """The pool terms whose highest similarity to a vocabulary term stays below ``max_similarity``.

    Similarity as the network sees prompts (``PromptDecoder.center_text``): embeddings minus the
    vocabulary's mean, scaled to unit length, then the dot product."""
    centre = vocabulary_embeddings.mean(0)

    def unit(x: np.ndarray) -> np.ndarray:
        x = x - centre
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)

    best = (unit(pool_embeddings) @ unit(vocabulary_embeddings).T).max(1)
    return [t for t, s in zip(pool, best) if s < max_similarity]


def pool_file_content(pool: List[str]) -> dict:
    return {"format": FORMAT, "version": 1, "prompts": pool}
