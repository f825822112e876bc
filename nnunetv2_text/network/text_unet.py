"""The text-promptable UNet: an nnU-Net encoder, a prompt decoder, stage adapters, a fusing decoder."""
from __future__ import annotations

from contextlib import contextmanager
from typing import List, Optional

import torch
from dynamic_network_architectures.initialization.weight_init import InitWeights_He, init_last_bn_before_add_to_0
from torch import nn

from nnunetv2_text.network.blocks import PromptDecoder, StageAdapter, append_constant_channels, stage_channels
from nnunetv2_text.network.config import TextNetworkConfig
from nnunetv2_text.network.decoder import TextFusionDecoder
from nnunetv2_text.network.voxtell import VoxTellPromptDecoder


class TextPromptableUNet(nn.Module):
    """Segments, for each of N prompts, the structure the prompt names.

    ``forward(x, text)``: x (B, C_in, *patch), text (B, N, text_dim) or (N, text_dim) shared by all
    images -> logits (B, N*K, *patch) (a list over deep-supervision scales when enabled). The image
    encoder never sees the text; :meth:`encode` and :meth:`decode` are exposed so that a predictor can
    encode a tile once and decode many prompts in chunks.
    """

    def __init__(self, encoder: nn.Module, config: TextNetworkConfig, n_conv_per_stage_decoder,
                 deep_supervision: bool = True, nonlin_first: bool = False):
        super().__init__()
        self.config = config
        self.bound_text: Optional[torch.Tensor] = None
        self.encoder = encoder
        chans = list(encoder.output_channels)
        dec_chans = stage_channels(chans)
        fusion = config.resolved_fusion_stages(len(dec_chans))
        self.fusion_stages = fusion
        if config.prompt_flavour == "voxtell":
            self.prompt_decoder = VoxTellPromptDecoder(
                config.text_dim, chans[config.attend_stage], config.prompt_dim, config.prompt_layers,
                config.prompt_heads, config.prompt_ffn_dim, config.prompt_text_hidden, config.prompt_dropout)
        else:
            self.prompt_decoder = PromptDecoder(config.text_dim, chans[config.attend_stage], config.prompt_dim,
                                                config.prompt_layers, config.prompt_heads, config.prompt_ffn_dim)
        # adapters for fused stages (G x C_s) and, with a dot-product output, the last stage (1 x C);
        # keyed by decoder stage index
        final_dot = config.final_output == "dot"
        if final_dot and config.outputs_per_prompt != 1:
            raise ValueError("final_output 'dot' gives one output per prompt")
        heads = {s: (config.guidance_dim, dec_chans[s]) for s in fusion}
        light = config.resolved_light_stages(len(dec_chans))
        heads.update({s: (config.light_channels, dec_chans[s]) for s in light})
        if final_dot:
            heads[len(dec_chans) - 1] = (1, dec_chans[-1])
        if config.shared_decoder:  # per stage and output: a read-out vector over C_s and a bias
            heads.update({s: (config.outputs_per_prompt, c + 1) for s, c in enumerate(dec_chans)})
        self.adapters = nn.ModuleDict({str(s): StageAdapter(config.prompt_dim, config.adapter_hidden, g, c)
                                       for s, (g, c) in heads.items()})
        if config.shape_prior_channels is not None and len(config.shape_prior_channels) != config.outputs_per_prompt - 1:
            raise ValueError(f"shape_prior_channels names {len(config.shape_prior_channels)} channels for "
                             f"{config.outputs_per_prompt - 1} foreground classes")
        self.decoder = TextFusionDecoder(encoder, n_conv_per_stage_decoder, config.guidance_dim, fusion,
                                         config.outputs_per_prompt, deep_supervision, nonlin_first, final_dot,
                                         light, config.light_channels, config.shared_decoder)

    def encode(self, x: torch.Tensor, directions: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        """The encoder's skips; a refiner with ``direction_channels`` reads its instruction's directions
        (B or 1, 2 (K-1)) as constant planes after the image's channels, appended here per tile."""
        if directions is not None:
            x = append_constant_channels(x, directions)
        return self.encoder(x)

    def prompt_queries(self, skips: List[torch.Tensor], text: torch.Tensor) -> torch.Tensor:
        """(B, N, D): the prompt decoder's query of each prompt. Prompts attend to the image, never to each
        other, so a predictor computes every prompt's query once per tile and decodes them in chunks
        (:meth:`decode` with ``queries``), as VoxTell runs its prompt decoder once and its image decoder
        per prompt."""
        b = skips[0].shape[0]
        if text.ndim == 2:
            text = text.unsqueeze(0).expand(b, -1, -1)
        if text.ndim != 3 or text.shape[0] != b or text.shape[2] != self.config.text_dim:
            raise ValueError(f"text must be (B={b}, N, {self.config.text_dim}) or (N, {self.config.text_dim}), "
                             f"got {tuple(text.shape)}")
        return self.prompt_decoder(text, skips[self.config.attend_stage])

    def decode(self, skips: List[torch.Tensor], text: Optional[torch.Tensor], image: Optional[torch.Tensor] = None,
               queries: Optional[torch.Tensor] = None):
        """Logits for each prompt, from its text or from its :meth:`prompt_queries` (``queries``); ``image``
        (the network input) is needed only by refinement models, whose output adds the one-hot prior of the
        shape in the input's channels (``shape_prior_channels``)."""
        q = self.prompt_queries(skips, text) if queries is None else queries  # (B, N, D)
        n = q.shape[1]
        guidance: List[Optional[torch.Tensor]] = [None] * self.decoder.num_stages
        for s, adapter in self.adapters.items():
            guidance[int(s)] = adapter(q)  # (B, N, G, C_s)
        out = self.decoder(skips, guidance, n)
        if self.config.shape_prior_channels is None:
            return out
        if image is None:
            raise ValueError("a refinement network decodes with its input (decode(skips, text, image))")
        prior = self.shape_prior(image)
        if isinstance(out, list):
            return [o + self._at(prior, o, n) for o in out]
        return out + self._at(prior, out, n)

    def shape_prior(self, image: torch.Tensor) -> torch.Tensor:
        """(B, K, ...) logits: ``shape_prior_logit`` on the class the input's shape channels give each voxel
        (background where none does), 0 elsewhere; the argmax of the prior alone is the input shape."""
        chans = self.config.shape_prior_channels
        fg = torch.stack([(image[:, c] > 0.5) if c >= 0 else torch.zeros_like(image[:, 0], dtype=torch.bool)
                          for c in chans], 1)
        one_hot = torch.cat((~fg.any(1, keepdim=True), fg), 1).float()
        # where two shape channels overlap, the first class wins, as the argmax of the prior picks it
        first = one_hot.cumsum(1) <= 1
        return (one_hot * first) * self.config.shape_prior_logit

    @staticmethod
    def _at(prior: torch.Tensor, like: torch.Tensor, n_prompts: int) -> torch.Tensor:
        """The prior at a deep-supervision output's resolution, repeated for each prompt."""
        if prior.shape[2:] != like.shape[2:]:
            prior = torch.nn.functional.interpolate(prior, size=like.shape[2:], mode="area")
        return prior.repeat(1, n_prompts, *([1] * (prior.ndim - 2))).to(like.dtype)

    def zero_output_heads(self) -> None:
        """With a shape prior the heads are the learned correction: starting at zero, an untrained refiner
        returns its input shape exactly."""
        for head in self.decoder.seg_layers:
            torch.nn.init.zeros_(head.weight)
            if head.bias is not None:
                torch.nn.init.zeros_(head.bias)

    def forward(self, x: torch.Tensor, text: Optional[torch.Tensor] = None):
        if text is None:  # prompts bound beforehand, so code that calls network(x) (nnU-Net's) works
            text = self.bound_text
            if text is None:
                raise ValueError("no text given and none bound (see bind_text)")
        return self.decode(self.encode(x), text, x)

    @contextmanager
    def bind_text(self, text: torch.Tensor):
        """Within the block, ``network(x)`` uses ``text``: lets nnU-Net's own steps call the network."""
        previous, self.bound_text = self.bound_text, text
        try:
            yield self
        finally:
            self.bound_text = previous

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """nnU-Net's ResEnc initialisation for the convolutions; transformer parts keep torch defaults."""
        InitWeights_He(1e-2)(module)
        init_last_bn_before_add_to_0(module)


def unwrap_network(network: nn.Module) -> nn.Module:
    """The module itself, under DistributedDataParallel and/or ``torch.compile`` (nnU-Net applies both):
    the one place that knows how, for code that needs the text network's own methods or state dict."""
    if isinstance(network, nn.parallel.DistributedDataParallel):
        network = network.module
    return getattr(network, "_orig_mod", network)
