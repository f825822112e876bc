"""The one place the text network's hyperparameters live.

The trainer creates a :class:`TextNetworkConfig`, stores ``to_dict()`` in every checkpoint, and the
predictor rebuilds the network from that dict with the same builder; nothing else hard-codes widths,
depths or the text dimension. Everything about the image backbone (stages, widths, strides, kernel
sizes) comes from the nnU-Net plans instead.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Optional, Tuple


@dataclass(frozen=True)
class TextNetworkConfig:
    #: dimension of the precomputed text embeddings (384 for MiniLM, 1024/2560 for Qwen3-Embedding)
    text_dim: int
    #: G, the number of guidance channels each fusion adds (VoxTell: 32)
    guidance_dim: int = 32
    #: width of the prompt decoder (the query space)
    prompt_dim: int = 512
    prompt_layers: int = 4
    prompt_heads: int = 8
    prompt_ffn_dim: int = 1024
    #: hidden width of the two-layer MLPs mapping a decoded prompt to T_s (G x C_s)
    adapter_hidden: int = 1024
    #: encoder stage whose features are the prompt decoder's keys/values (-1: the bottleneck)
    attend_stage: int = -1
    #: decoder stages that fuse text, counted from the lowest resolution (0) and allowing negative
    #: indices (-1: the highest resolution); None fuses at every decoder stage
    fusion_stages: Optional[Tuple[int, ...]] = None
    #: output channels per prompt: 1 for a binary mask (sigmoid), K for a K-class map (softmax)
    outputs_per_prompt: int = 1

    def resolved_fusion_stages(self, num_decoder_stages: int) -> Tuple[int, ...]:
        if self.fusion_stages is None:
            return tuple(range(num_decoder_stages))
        out = sorted({s % num_decoder_stages for s in self.fusion_stages
                      if -num_decoder_stages <= s < num_decoder_stages})
        if len(out) != len(set(self.fusion_stages)):
            raise ValueError(f"fusion_stages {self.fusion_stages} do not fit a decoder of "
                             f"{num_decoder_stages} stages")
        if not out:
            raise ValueError("fusion_stages is empty: the network would ignore the text")
        return tuple(out)

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["fusion_stages"] is not None:
            d["fusion_stages"] = list(d["fusion_stages"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TextNetworkConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown text network config keys {sorted(unknown)} (written by a newer version?)")
        d = dict(d)
        if d.get("fusion_stages") is not None:
            d["fusion_stages"] = tuple(d["fusion_stages"])
        return cls(**d)
