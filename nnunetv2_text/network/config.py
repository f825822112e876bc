"""The one place the text network's hyperparameters live.

The trainer creates a :class:`TextNetworkConfig`, stores ``to_dict()`` in every checkpoint, and the
predictor rebuilds the network from that dict with the same builder; nothing else hard-codes widths,
depths or the text dimension. Everything about the image backbone (stages, widths, strides, kernel
sizes) comes from the nnU-Net plans instead.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Optional, Tuple


def names_another_decoder(options: Mapping[str, Any]) -> bool:
    """Whether network options choose a decoder that the shared decoder excludes (light or chosen fusion
    stages, VoxTell's dot-product output, a refiner's shape prior): the trainer's default design applies only
    where they do not, and the config refuses both at once."""
    return (bool(options.get("light_stages")) or options.get("fusion_stages") is not None
            or options.get("final_output", "head") != "head" or options.get("shape_prior_channels") is not None)


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
    #: "nnunetv2_text" (this project's prompt decoder) or "voxtell" (VoxTell's, network/voxtell.py)
    prompt_flavour: str = "nnunetv2_text"
    #: VoxTell flavour: hidden width of the text projection, and the prompt decoder's dropout
    prompt_text_hidden: int = 2048
    prompt_dropout: float = 0.0
    #: "head": a 1x1x1 conv on the last decoder stage; "dot": the last stage's features dotted with a
    #: per-prompt vector (VoxTell's output; the last stage then fuses no guidance)
    final_output: str = "head"
    #: the highest-resolution decoder stages (counted from the top) that run once per image instead of once
    #: per prompt: their convolutions are shared, and each prompt reaches them through a thin path of
    #: ``light_channels`` (its own dot products with the shared features, mixed by a 1x1x1 convolution).
    #: Those stages hold most of the decoder's arithmetic, so a prompt then costs a fraction of a decoder
    #: (issue #14). 0: every stage from the first fused one on runs per prompt (VoxTell's design)
    light_stages: int = 0
    light_channels: int = 8
    #: every decoder stage runs once per image, as plain nnU-Net's decoder does. A prompt's logits at a
    #: stage are its own linear read-out of that stage's shared features (a vector and a bias its adapter
    #: makes from the decoded prompt) plus the upsampled logits of the stage below, deep-supervised at every
    #: stage. A prompt then costs a dot product per voxel and stage instead of a decoder, so every structure
    #: of a case costs about one plain pass (issue #25). Fusion and light stages do not apply
    shared_decoder: bool = False
    #: refinement models (CoWTalk): the input channel holding the current shape of each output class 1..K-1
    #: (-1: none). The output is then ``shape_prior_logit`` x the input's one-hot shape plus a learned
    #: correction whose heads start at zero, so an untrained refiner returns its input exactly and training
    #: only has to learn the edit an instruction asks for (issue #13)
    shape_prior_channels: Optional[Tuple[int, ...]] = None
    shape_prior_logit: float = 4.0
    #: refinement models: 2 x (outputs_per_prompt - 1) input channels after the dataset's, constant over the
    #: image, that say per class whether the instruction grows it and whether it shrinks it, as the
    #: edit-reading rule reads the instruction (``text.instructions.edit_directions``). Trained on the sentence
    #: embedding alone, a CPU-sized refiner answered the contrary instruction as the right one (issue #26)
    direction_channels: bool = False

    def extra_input_channels(self) -> int:
        """Input channels the network takes beyond the dataset's (the caller appends them)."""
        if self.direction_channels and self.outputs_per_prompt < 2:
            raise ValueError("direction_channels belong to refiners: they need outputs_per_prompt >= 2")
        return 2 * (self.outputs_per_prompt - 1) if self.direction_channels else 0

    def check_shared_decoder(self) -> None:
        if self.shared_decoder and names_another_decoder(vars(self)):
            raise ValueError("shared_decoder reads every stage out per prompt: it takes no light_stages, "
                             "fusion_stages, final_output 'dot' or shape_prior_channels")

    def resolved_light_stages(self, num_decoder_stages: int) -> Tuple[int, ...]:
        if self.light_stages == 0:
            return ()
        if not 0 < self.light_stages < num_decoder_stages:
            raise ValueError(f"light_stages {self.light_stages} must leave at least one of the "
                             f"{num_decoder_stages} decoder stages to run per prompt")
        if self.final_output != "head" or self.light_channels < 1:
            raise ValueError("light_stages needs final_output 'head' and light_channels >= 1")
        return tuple(range(num_decoder_stages - self.light_stages, num_decoder_stages))

    def resolved_fusion_stages(self, num_decoder_stages: int) -> Tuple[int, ...]:
        """The per-prompt stages that fuse guidance (light stages fuse through their thin path instead)."""
        if self.prompt_flavour not in ("nnunetv2_text", "voxtell") or self.final_output not in ("head", "dot"):
            raise ValueError(f"unknown prompt_flavour {self.prompt_flavour!r} or final_output {self.final_output!r}")
        self.check_shared_decoder()
        if self.shared_decoder:
            return ()
        n_deep = num_decoder_stages - len(self.resolved_light_stages(num_decoder_stages))
        if self.fusion_stages is None:
            return tuple(range(n_deep - (self.final_output == "dot")))
        out = sorted({s % num_decoder_stages for s in self.fusion_stages
                      if -num_decoder_stages <= s < num_decoder_stages})
        if len(out) != len(set(self.fusion_stages)):
            raise ValueError(f"fusion_stages {self.fusion_stages} do not fit a decoder of "
                             f"{num_decoder_stages} stages")
        if any(s >= n_deep for s in out):
            raise ValueError(f"fusion_stages {self.fusion_stages} name a light stage (the top {self.light_stages})")
        if not out and self.final_output != "dot" and not self.light_stages:
            raise ValueError("fusion_stages is empty: the network would ignore the text")
        if self.final_output == "dot" and num_decoder_stages - 1 in out:
            raise ValueError("final_output 'dot' uses the last decoder stage's features as they are: it cannot "
                             "also be a fusion stage")
        return tuple(out)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("fusion_stages", "shape_prior_channels"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TextNetworkConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown text network config keys {sorted(unknown)} (written by a newer version?)")
        d = dict(d)
        for k in ("fusion_stages", "shape_prior_channels"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)


def voxtell_config(text_dim: int = 2560, query_dim: int = 2048, guidance_dim: int = 32,
                   adapter_hidden: int = 2048, attend_stage: int = 4) -> TextNetworkConfig:
    """VoxTell 0.1.2's configuration (its predictor hard-codes these for the released weights): a 6-layer,
    8-head prompt decoder with a 2048-wide ReLU feed-forward and dropout 0.1, attending to encoder stage 4,
    guidance at the four lower decoder stages and a dot-product output at full resolution."""
    return TextNetworkConfig(text_dim=text_dim, guidance_dim=guidance_dim, prompt_dim=query_dim, prompt_layers=6,
                             prompt_heads=8, prompt_ffn_dim=2048, adapter_hidden=adapter_hidden,
                             attend_stage=attend_stage, fusion_stages=(0, 1, 2, 3), prompt_flavour="voxtell",
                             prompt_text_hidden=2048, prompt_dropout=0.1, final_output="dot")
