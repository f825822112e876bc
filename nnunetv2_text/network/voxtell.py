"""VoxTell's prompt decoder, as this network's ``prompt_flavour="voxtell"``, so VoxTell's released weights
load into it (``nnunetv2_text.interop.voxtell``) and are then run, batched, by nnU-Net's machinery.

What differs from this project's own prompt decoder (:class:`.blocks.PromptDecoder`), as VoxTell 0.1.2
does it: raw text embeddings (no centring), a Linear-GELU-Linear projection of text and of image tokens
(no LayerNorm), six pre-norm cross-attention layers with a ReLU feed-forward and dropout, a final
LayerNorm, and a fixed sine/cosine encoding added to the image keys. VoxTell's layers also carry a
self-attention that its forward never uses; it is not built here.

Module names follow VoxTell's (``project_text_embed``, ``layers.N.multihead_attn`` ...) so that
checkpoint keys map one to one.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nnunetv2_text.network.blocks import CentredText


def voxtell_positions(grid: Sequence[int], dim: int, device=None, dtype=None) -> torch.Tensor:
    """(prod(grid), dim) encoding of the tokens of ``features.flatten(2)`` as VoxTell encodes them.

    VoxTell adds a 3D sine/cosine table (``positional_encodings.PositionalEncoding3D``: per axis
    ``ch = 2 * ceil(dim / 6)`` interleaved sin/cos channels, axes concatenated, cut to ``dim``) to
    tokens it orders as (axis 3, axis 4, axis 2) of the feature map; its first table axis is therefore
    feature axis 3, its second axis 4, its third axis 2. Computed for any grid, so a fine-tuning patch
    other than VoxTell's 192³ works; for 12³ it equals VoxTell's stored ``pos_embed`` (checked on import).
    """
    if len(grid) != 3:
        raise ValueError(f"VoxTell's positional encoding is 3D, got a grid of {len(grid)} axes")
    ch = int(math.ceil(dim / 6) * 2)
    ch += ch % 2
    inv_freq = 1.0 / (10000 ** (torch.arange(0, ch, 2, device=device, dtype=torch.float32) / ch))

    def axis(n: int) -> torch.Tensor:  # (n, ch): sin and cos interleaved
        ang = torch.arange(n, device=device, dtype=torch.float32)[:, None] * inv_freq
        return torch.stack((ang.sin(), ang.cos()), -1).flatten(1)

    s2, s3, s4 = grid
    e3, e4, e2 = axis(s3), axis(s4), axis(s2)  # table axes x, y, z
    pe = torch.cat([e3[None, :, None, :].expand(s2, s3, s4, ch),
                    e4[None, None, :, :].expand(s2, s3, s4, ch),
                    e2[:, None, None, :].expand(s2, s3, s4, ch)], -1)[..., :dim]
    pe = pe.reshape(s2 * s3 * s4, dim)
    return pe.to(dtype) if dtype is not None else pe


class VoxTellDecoderLayer(nn.Module):
    """Pre-norm: q += attn(norm2(q), keys + pos, values); q += ffn(norm3(q)), ReLU, dropout."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.linear1, self.linear2 = nn.Linear(dim, ffn_dim), nn.Linear(ffn_dim, dim)
        self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout, self.dropout2, self.dropout3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        q = q + self.dropout2(self.multihead_attn(self.norm2(q), keys, values, need_weights=False)[0])
        return q + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(self.norm3(q))))))


class VoxTellPromptDecoder(CentredText):
    """Each prompt's embedding -> an image-aware query (B, N, dim), as VoxTell computes it."""

    def __init__(self, text_dim: int, image_channels: int, dim: int, layers: int, heads: int, ffn_dim: int,
                 text_hidden: int = 2048, dropout: float = 0.1):
        # the centre is not used by the network (VoxTell reads raw embeddings), only by similarity reports
        super().__init__(text_dim)
        self.project_text_embed = nn.Sequential(nn.Linear(text_dim, text_hidden), nn.GELU(), nn.Linear(text_hidden, dim))
        self.project_bottleneck_embed = nn.Sequential(nn.Linear(image_channels, dim), nn.GELU(), nn.Linear(dim, dim))
        self.layers = nn.ModuleList([VoxTellDecoderLayer(dim, heads, ffn_dim, dropout) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)
        self.dim = dim

    def forward(self, text: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        tokens = self.project_bottleneck_embed(features.flatten(2).transpose(1, 2))  # (B, L, dim)
        keys = tokens + voxtell_positions(features.shape[2:], self.dim, features.device, tokens.dtype)
        q = self.project_text_embed(text.to(tokens.dtype))
        for layer in self.layers:
            q = layer(q, keys, tokens)
        return self.norm(q)
