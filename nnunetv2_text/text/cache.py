"""The embedding cache: text embeddings computed once, read by training and inference.

File format (``embeddings.safetensors``; no pickle, since caches are shared between sites):

- one float32 tensor per encoder, named ``enc_<key>`` with shape (num_texts, dim), where ``key`` is a
  short hash of (model id, instruction);
- the safetensors header metadata entry ``nnunetv2_text`` holds JSON::

      {"format": "nnunetv2_text.embedding_cache", "version": 1,
       "encoders": {"<key>": {"model_id": "...", "instruction": "...", "dim": 384, "texts": ["...", ...]}}}

  row i of ``enc_<key>`` is the embedding of ``texts[i]``.

An entry is therefore keyed by (model id, instruction, text). Writes are atomic (temp file + rename).
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from nnunetv2_text.errors import UserInputError
from nnunetv2_text.utils.io import atomic_path

logger = logging.getLogger(__name__)

FORMAT = "nnunetv2_text.embedding_cache"
META_KEY = "nnunetv2_text"


class EmbeddingCacheError(UserInputError):
    """The cache cannot serve a request; the message names the file, encoder or text at fault."""


def encoder_key(model_id: str, instruction: str) -> str:
    return hashlib.sha1(f"{model_id}\x00{instruction}".encode("utf-8")).hexdigest()[:16]


@dataclass
class _Table:
    model_id: str
    instruction: str
    dim: int
    texts: List[str] = field(default_factory=list)
    vectors: Optional[np.ndarray] = None  # (len(texts), dim) float32

    def index(self) -> Dict[str, int]:
        return {t: i for i, t in enumerate(self.texts)}


class EmbeddingCache:
    """In-memory view of one cache file; :meth:`save` writes it back atomically."""

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        self._tables: Dict[str, _Table] = {}
        if self.path.exists():
            self._read()

    # ------------------------------------------------------------------ io
    def _read(self) -> None:
        from safetensors import safe_open

        try:
            with safe_open(str(self.path), framework="numpy") as f:
                meta_raw = (f.metadata() or {}).get(META_KEY)
                if meta_raw is None:
                    raise EmbeddingCacheError(f"{self.path}: not an nnunetv2_text embedding cache (no metadata)")
                meta = json.loads(meta_raw)
                if meta.get("format") != FORMAT:
                    raise EmbeddingCacheError(f"{self.path}: unknown cache format '{meta.get('format')}'")
                for key, enc in meta["encoders"].items():
                    vec = f.get_tensor(f"enc_{key}").astype(np.float32)
                    if vec.shape != (len(enc["texts"]), enc["dim"]):
                        raise EmbeddingCacheError(
                            f"{self.path}: encoder {enc['model_id']} has {vec.shape} vectors for "
                            f"{len(enc['texts'])} texts of dim {enc['dim']}")
                    self._tables[key] = _Table(enc["model_id"], enc["instruction"], int(enc["dim"]),
                                               list(enc["texts"]), vec)
        except EmbeddingCacheError:
            raise
        except Exception as e:  # corrupt header, truncated file, ...
            raise EmbeddingCacheError(f"{self.path}: cannot read embedding cache ({e})") from e

    def save(self) -> None:
        from safetensors.numpy import save_file

        tensors, meta = {}, {"format": FORMAT, "version": 1, "encoders": {}}
        for key, t in self._tables.items():
            tensors[f"enc_{key}"] = np.ascontiguousarray(
                t.vectors if t.vectors is not None else np.zeros((0, t.dim), np.float32), dtype=np.float32)
            meta["encoders"][key] = {"model_id": t.model_id, "instruction": t.instruction, "dim": t.dim,
                                     "texts": t.texts}
        with atomic_path(self.path) as tmp:
            save_file(tensors, tmp, metadata={META_KEY: json.dumps(meta, ensure_ascii=False)})

    # ------------------------------------------------------------------ queries
    def encoders(self) -> List[dict]:
        return [{"model_id": t.model_id, "instruction": t.instruction, "dim": t.dim, "num_texts": len(t.texts)}
                for t in self._tables.values()]

    def _table(self, model_id: str, instruction: str) -> Optional[_Table]:
        return self._tables.get(encoder_key(model_id, instruction))

    def missing(self, model_id: str, instruction: str, texts: Sequence[str]) -> List[str]:
        t = self._table(model_id, instruction)
        have = set(t.texts) if t is not None else set()
        return list(dict.fromkeys(x for x in texts if x not in have))

    def get(self, model_id: str, instruction: str, texts: Sequence[str],
            expected_dim: Optional[int] = None) -> np.ndarray:
        """(len(texts), dim) embeddings; an error names the first text the cache lacks."""
        t = self._table(model_id, instruction)
        if t is None:
            have = ", ".join(f"{e['model_id']} (dim {e['dim']})" for e in self.encoders()) or "none"
            raise EmbeddingCacheError(
                f"{self.path}: no embeddings for encoder '{model_id}' with instruction {instruction!r}; "
                f"the cache holds: {have}. Rebuild it with nnUNetv2_text_embed --model {model_id}")
        if expected_dim is not None and t.dim != expected_dim:
            raise EmbeddingCacheError(
                f"{self.path}: encoder '{model_id}' has dimension {t.dim}, the model expects {expected_dim}")
        idx = t.index()
        rows = []
        for x in texts:
            if x not in idx:
                raise EmbeddingCacheError(
                    f"{self.path}: term '{x}' is not in the cache for encoder '{model_id}'; "
                    "run nnUNetv2_text_embed to add it")
            rows.append(idx[x])
        return t.vectors[rows] if rows else np.zeros((0, t.dim), np.float32)

    def add(self, model_id: str, instruction: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise ValueError(f"expected ({len(texts)}, dim) vectors, got {vectors.shape}")
        key = encoder_key(model_id, instruction)
        t = self._tables.get(key)
        if t is None:
            t = self._tables[key] = _Table(model_id, instruction, int(vectors.shape[1]), [],
                                           np.zeros((0, vectors.shape[1]), np.float32))
        if vectors.shape[1] != t.dim:
            raise EmbeddingCacheError(
                f"{self.path}: encoder '{model_id}' has dimension {t.dim}, new vectors have {vectors.shape[1]}")
        idx = t.index()
        new_texts, new_rows = [], []
        for x, v in zip(texts, vectors):
            if x in idx:
                t.vectors[idx[x]] = v
            elif x not in new_texts:
                new_texts.append(x)
                new_rows.append(v)
        if new_texts:
            t.texts.extend(new_texts)
            t.vectors = np.concatenate([t.vectors, np.stack(new_rows)], 0)

    def update_with(self, encoder, texts: Sequence[str]) -> int:
        """Encode and add the texts this cache lacks for ``encoder``; returns how many were added."""
        todo = self.missing(encoder.model_id, encoder.instruction, texts)
        if todo:
            encoder.check_length(todo)
            logger.info("embedding %d new texts with %s", len(todo), encoder.model_id)
            self.add(encoder.model_id, encoder.instruction, todo, encoder.encode(todo))
        return len(todo)
