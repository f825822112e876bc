"""Building blocks of the text fusion: positional encoding, prompt decoder, stage adapters, fusion.

Shapes use B = images, N = prompts per image, D = prompt decoder width, G = guidance channels,
C = feature channels of a decoder stage, L = number of image tokens.
"""
from __future__ import annotations

import math
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def sinusoidal_positions_3d(grid: Sequence[int], dim: int, device=None, dtype=None) -> torch.Tensor:
    """(prod(grid), dim) fixed sine/cosine encoding of voxel indices on a feature grid of any size.

    Computed for the actual grid on every call (cheap: a few hundred tokens), so the prompt decoder works
    for whatever patch size the plans choose, unlike an encoding stored for one grid. ``dim`` is split
    over the axes; leftover channels stay zero.
    """
    nd = len(grid)
    per_axis = (dim // nd) // 2 * 2
    if per_axis == 0:
        raise ValueError(f"positional encoding needs dim >= {2 * nd}, got {dim}")
    freqs = torch.exp(torch.arange(0, per_axis, 2, device=device, dtype=torch.float32)
                      * (-math.log(10000.0) / per_axis))  # (per_axis/2,)
    coords = torch.meshgrid(*[torch.arange(g, device=device, dtype=torch.float32) for g in grid], indexing="ij")
    parts = []
    for c in coords:
        ang = c.reshape(-1, 1) * freqs  # (L, per_axis/2)
        parts += [torch.sin(ang), torch.cos(ang)]
    pe = torch.cat(parts, 1)
    if pe.shape[1] < dim:
        pe = torch.cat([pe, pe.new_zeros(pe.shape[0], dim - pe.shape[1])], 1)
    return pe.to(dtype) if dtype is not None else pe


class PromptDecoderLayer(nn.Module):
    """Pre-norm cross-attention (prompts -> image tokens) and feed-forward.

    There is deliberately no self-attention between prompts: each prompt's result then depends only on
    the image and that prompt, so batching prompts at inference cannot change any mask.
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim))

    def forward(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """q (B, N, D); keys/values (B, L, D) -> (B, N, D)."""
        h = self.norm_q(q)
        q = q + self.attn(h, keys, values, need_weights=False)[0]
        return q + self.ffn(self.norm_ffn(q))


class CentredText(nn.Module):
    """The training vocabulary's mean term embedding, kept with the weights.

    Sentence embeddings share a large common direction, so subtracting the vocabulary's mean makes what
    tells prompts apart reach the network (without it, trainings could get stuck giving two concepts one
    mask; figures in docs/RESULTS.md). A buffer: saved with the weights, applied to unseen prompts alike.
    The predictor also measures a prompt's similarity to the training terms in this centred space."""

    def __init__(self, text_dim: int):
        super().__init__()
        self.register_buffer("text_center", torch.zeros(text_dim))

    @torch.no_grad()
    def set_text_center(self, embeddings: torch.Tensor) -> None:
        """Centre prompts on the mean of these (the training vocabulary's term embeddings, (T, text_dim))."""
        self.text_center.copy_(embeddings.to(self.text_center).mean(0))

    def center_text(self, text: torch.Tensor) -> torch.Tensor:
        """Subtract the vocabulary mean and rescale to unit length (a term equal to the mean maps to ~0)."""
        return F.normalize(text.float() - self.text_center.float(), dim=-1, eps=1e-6)


class PromptDecoder(CentredText):
    """Turns each prompt embedding into an image-aware query (VoxTell's f_prompt)."""

    def __init__(self, text_dim: int, image_channels: int, dim: int, layers: int, heads: int, ffn_dim: int):
        super().__init__(text_dim)
        # the LayerNorm gives the text query the scale of the image tokens: normalised sentence embeddings
        # projected by a freshly initialised Linear are ~30x smaller, and the first attention residual
        # would otherwise drown the text in image content
        self.text_proj = nn.Sequential(nn.Linear(text_dim, dim), nn.GELU(), nn.Linear(dim, dim), nn.LayerNorm(dim))
        self.image_proj = nn.Sequential(nn.Linear(image_channels, dim), nn.LayerNorm(dim))
        self.layers = nn.ModuleList([PromptDecoderLayer(dim, heads, ffn_dim) for _ in range(layers)])
        self.norm_out = nn.LayerNorm(dim)
        self.dim = dim

    def forward(self, text: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """text (B, N, text_dim); features (B, C, *grid) -> decoded prompts (B, N, D)."""
        tokens = self.image_proj(features.flatten(2).transpose(1, 2))  # (B, L, D)
        pos = sinusoidal_positions_3d(features.shape[2:], self.dim, features.device, tokens.dtype)
        keys = tokens + pos
        q = self.text_proj(self.center_text(text).to(tokens.dtype))
        for layer in self.layers:
            q = layer(q, keys, tokens)
        return self.norm_out(q)


class StageAdapter(nn.Module):
    """Two-layer MLP: decoded prompt (B, N, D) -> guidance T_s (B, N, G, C_s)."""

    def __init__(self, dim: int, hidden: int, guidance_dim: int, channels: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, guidance_dim * channels))
        self.guidance_dim, self.channels = guidance_dim, channels

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return self.mlp(q).unflatten(-1, (self.guidance_dim, self.channels))


def fuse(features: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
    """VoxTell fusion y = concat(z', T . z'): G new channels, each a dot product over C.

    features (B*N, C, *grid), guidance (B*N, G, C) -> (B*N, C + G, *grid).
    """
    g = torch.einsum("bc...,bgc->bg...", features, guidance.to(features.dtype))
    return torch.cat((features, g), 1)


def expand_for_prompts(x: torch.Tensor, num_prompts: int) -> torch.Tensor:
    """(B, ...) -> (B*N, ...), image-major: row b*N + n belongs to image b, prompt n."""
    return x.repeat_interleave(num_prompts, dim=0) if num_prompts > 1 else x


def append_constant_channels(x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """x (B, C, *spatial) with one constant plane per column of ``values`` (B or 1, E) appended: a refiner's
    direction channels. Spread per tile, never over a whole case, where E planes of a real scan take GBs."""
    v = values.to(x.device, x.dtype)
    v = v.expand(x.shape[0], -1) if v.shape[0] == 1 else v
    return torch.cat([x, v[(...,) + (None,) * (x.ndim - 2)].expand(*v.shape, *x.shape[2:])], 1)


def stage_channels(encoder_channels: Sequence[int]) -> List[int]:
    """Feature channels of the decoder stages, lowest resolution first."""
    return [encoder_channels[-(s + 2)] for s in range(len(encoder_channels) - 1)]
