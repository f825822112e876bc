"""Where a dataset's text lives, and the one step that prepares it (``nnUNetv2_text_embed``).

Source (raw side), first match wins:
  1. ``--vocab`` given to the embed command (file path or shipped name, e.g. ``topcow``);
  2. the key ``"vocabulary"`` in the raw ``dataset.json`` (shipped name, or a path relative to the raw
     dataset folder);
  3. ``$nnUNet_raw/DatasetXXX_Name/vocabulary.json``.

Prepared (preprocessed side, all training reads): ``$nnUNet_preprocessed/DatasetXXX_Name/text/`` with
``vocabulary.json`` (validated copy), ``embeddings.safetensors`` (the cache, see :mod:`.cache`) and
``encoder.json`` (which encoder of the cache the dataset uses: model id, instruction, dim) and
``foreign_prompts.json`` (prompts naming nothing the dataset labels, see :mod:`.foreign`) and, for a
merged dataset, ``sources.json`` (what each case's source annotates, see :mod:`.sources`).
Training therefore never needs the raw folder nor the text encoder.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

import numpy as np

from nnunetv2_text.errors import UserInputError
from nnunetv2_text.text.cache import EmbeddingCache, EmbeddingCacheError
from nnunetv2_text.text.foreign import (FOREIGN_FILE, drop_close_to_vocabulary, foreign_prompt_pool,
                                        pool_file_content)
from nnunetv2_text.text.sources import SOURCES_FILE, load_sources
from nnunetv2_text.text.vocabulary import (Vocabulary, VocabularyError, load_vocabulary, parse_vocabulary,
                                           resolve_vocabulary_path, validate_against_dataset)
from nnunetv2_text.utils.io import atomic_write_json
from nnunetv2_text.utils.orientation import require_canonical_orientation

logger = logging.getLogger(__name__)

TEXT_FOLDER = "text"
VOCAB_FILE = "vocabulary.json"
CACHE_FILE = "embeddings.safetensors"
ENCODER_FILE = "encoder.json"


def text_folder(preprocessed_dataset_base: Path) -> Path:
    return Path(preprocessed_dataset_base) / TEXT_FOLDER


def find_source_vocabulary(raw_dataset_folder: Path, dataset_json: dict, vocab: Optional[str] = None) -> Path:
    raw_dataset_folder = Path(raw_dataset_folder)
    if vocab is not None:
        return resolve_vocabulary_path(vocab, raw_dataset_folder)
    if "vocabulary" in dataset_json:
        return resolve_vocabulary_path(dataset_json["vocabulary"], raw_dataset_folder)
    default = raw_dataset_folder / VOCAB_FILE
    if default.is_file():
        return default
    raise VocabularyError(
        f"{raw_dataset_folder}: no vocabulary. Put one at {default}, name one with the key 'vocabulary' in "
        "dataset.json, or pass --vocab (see vocab/README.md)")


@dataclass
class DatasetText:
    """What training needs: the vocabulary and one embedding per term, from one encoder."""

    vocabulary: Vocabulary
    terms: List[str]          # row i of ``embeddings`` embeds terms[i]
    embeddings: np.ndarray    # (len(terms), dim) float32
    model_id: str
    instruction: str
    #: foreign prompts (see :mod:`.foreign`), also in ``terms``; training teaches them "not here"
    foreign: List[str] = field(default_factory=list)
    _index: Optional[dict] = field(default=None, init=False, repr=False, compare=False)

    def prompt_embeddings(self) -> np.ndarray:
        """Embeddings of every term the model is taught to segment (all but the foreign prompts): the
        prompt centre is their mean, so adding foreign prompts does not move it."""
        foreign = set(self.foreign)
        return self.embeddings[[i for i, t in enumerate(self.terms) if t not in foreign]]

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def term_index(self) -> dict:
        """term -> row of ``embeddings`` (built once: training looks terms up every batch)."""
        if self._index is None:
            self._index = {t: i for i, t in enumerate(self.terms)}
        return self._index


def load_dataset_text(preprocessed_dataset_base: Path, dataset_json: dict,
                      extra_texts: Iterable[str] = ()) -> DatasetText:
    """Read the prepared vocabulary and embeddings; every term must be in the cache (no encoder here)."""
    folder = text_folder(preprocessed_dataset_base)
    enc_file, vocab_file, cache_file = folder / ENCODER_FILE, folder / VOCAB_FILE, folder / CACHE_FILE
    for f in (enc_file, vocab_file, cache_file):
        if not f.is_file():
            raise UserInputError(
                f"{f} is missing: run `nnUNetv2_text_embed -d {Path(preprocessed_dataset_base).name}` "
                "after planning and before training")
    enc = json.loads(enc_file.read_text(encoding="utf-8"))
    vocab = load_vocabulary(vocab_file, dataset_labels=dataset_json["labels"])
    validate_against_dataset(vocab, dataset_json["labels"])
    foreign = []
    if (folder / FOREIGN_FILE).is_file():
        foreign = json.loads((folder / FOREIGN_FILE).read_text(encoding="utf-8"))["prompts"]
    terms = list(dict.fromkeys(list(vocab.all_terms()) + list(extra_texts) + foreign))
    cache = EmbeddingCache(cache_file)
    emb = cache.get(enc["model_id"], enc["instruction"], terms, expected_dim=enc["dim"])
    return DatasetText(vocab, terms, emb, enc["model_id"], enc["instruction"], foreign)


def _write_foreign_pool(folder: Path, cache: EmbeddingCache, encoder, vocabulary) -> tuple:
    """The dataset's foreign-prompt pool, embedded and written -> (pool, texts newly cached, left out as too
    close to the vocabulary)."""
    candidates = foreign_prompt_pool(vocabulary)
    own = vocabulary.all_terms()
    added = cache.update_with(encoder, own + candidates)
    foreign = drop_close_to_vocabulary(candidates, cache.get(encoder.model_id, encoder.instruction, candidates),
                                       cache.get(encoder.model_id, encoder.instruction, own))
    left_out = len(candidates) - len(foreign)
    logger.info("foreign-prompt pool: %d terms (%d too close to the vocabulary left out)", len(foreign), left_out)
    atomic_write_json(folder / FOREIGN_FILE, pool_file_content(foreign))
    return foreign, added, left_out


def _copy_sources(raw_dataset_folder: Path, folder: Path, vocabulary, src) -> None:
    """A merged dataset's partial-label record, checked against the vocabulary, into the text folder."""
    sources = load_sources(raw_dataset_folder / SOURCES_FILE)
    if sources is None:
        return
    unknown = sorted({c for s in sources.sources.values() for c in s["annotated_concepts"]}
                     - {c.id for c in vocabulary.concepts})
    if unknown:
        raise UserInputError(f"{raw_dataset_folder / SOURCES_FILE}: annotated concepts {unknown} are not in "
                             f"the vocabulary {src}")
    atomic_write_json(folder / SOURCES_FILE, sources.to_dict())


def prepare_dataset_text(raw_dataset_folder: Path, preprocessed_dataset_base: Path, encoder,
                         vocab: Optional[str] = None, extra_texts: Sequence[str] = ()) -> dict:
    """Validate the vocabulary, embed what the cache lacks, and write the text folder atomically.

    ``encoder`` is a :class:`nnunetv2_text.text.encoder.TextEncoder` (loaded only if texts are missing).
    Returns a summary (paths, counts) for the command to print.
    """
    raw_dataset_folder = Path(raw_dataset_folder)
    ds_file = Path(preprocessed_dataset_base) / "dataset.json"
    if not ds_file.is_file():
        ds_file = raw_dataset_folder / "dataset.json"
    dataset_json = json.loads(ds_file.read_text(encoding="utf-8"))
    # before anything is embedded: a dataset read in storage order has to be preprocessed again
    require_canonical_orientation(dataset_json, raw_dataset_folder.name)
    src = find_source_vocabulary(raw_dataset_folder, dataset_json, vocab)
    vocabulary = load_vocabulary(src, dataset_labels=dataset_json["labels"],
                                 dropped_labels=dataset_json.get("dropped_regions", ()))
    validate_against_dataset(vocabulary, dataset_json["labels"])

    folder = text_folder(preprocessed_dataset_base)
    folder.mkdir(parents=True, exist_ok=True)
    cache = EmbeddingCache(folder / CACHE_FILE)
    extra_texts = list(extra_texts)
    added, foreign, left_out = 0, [], 0
    if "cowtalk" in dataset_json:  # a refinement dataset: its instructions are cached like terms
        from nnunetv2_text.text.instructions import INSTRUCTIONS_FILE, all_instruction_texts, read_case_instructions

        cases = read_case_instructions(raw_dataset_folder, dataset_json)
        extra_texts += all_instruction_texts(cases)
        atomic_write_json(folder / INSTRUCTIONS_FILE, cases)
    else:  # a segmentation dataset: prompts that name nothing here, to be taught "not here"
        foreign, added, left_out = _write_foreign_pool(folder, cache, encoder, vocabulary)
        extra_texts += foreign
    _copy_sources(raw_dataset_folder, folder, vocabulary, src)
    texts = list(dict.fromkeys(list(vocabulary.all_terms()) + extra_texts))
    for t in texts:
        if not t.strip():
            raise UserInputError(f"{src}: empty text among the terms")
    added += cache.update_with(encoder, texts)
    dim = cache.get(encoder.model_id, encoder.instruction, texts[:1]).shape[1]
    if added:
        cache.save()
    # the vocabulary copy stores label values, so it no longer depends on label names
    atomic_write_json(folder / VOCAB_FILE, vocabulary.to_dict())
    atomic_write_json(folder / ENCODER_FILE, {"model_id": encoder.model_id, "instruction": encoder.instruction,
                                              "dim": int(dim)})
    return {"vocabulary_source": str(src), "text_folder": str(folder), "terms": len(texts), "added": added,
            "foreign": len(foreign), "foreign_left_out": left_out, "model_id": encoder.model_id, "dim": int(dim)}


__all__ = ["DatasetText", "load_dataset_text", "prepare_dataset_text", "find_source_vocabulary", "text_folder",
           "EmbeddingCacheError", "VocabularyError", "parse_vocabulary"]
