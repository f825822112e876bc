"""The text-promptable UNet: an nnU-Net encoder, a prompt decoder, stage adapters, a fusing decoder."""
from __future__ import annotations

from contextlib import contextmanager
from typing import List, Optional

import torch
from dynamic_network_architectures.initialization.weight_init import InitWeights_He, init_last_bn_before_add_to_0
from torch import nn

from nnunetv2_text.network.blocks import PromptDecoder, StageAdapter, stage_channels
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
        self.adapters = nn.ModuleDict({str(s): StageAdapter(config.prompt_dim, config.adapter_hidden, g, c)
                                       for s, (g, c) in heads.items()})
        self.decoder = TextFusionDecoder(encoder, n_conv_per_stage_decoder, config.guidance_dim, fusion,
                                         config.outputs_per_prompt, deep_supervision, nonlin_first, final_dot,
                                         light, config.light_channels)

    def encode(self, x: torch.Tensor) -> List[torch.Tensor]:
        return self.encoder(x)

    def decode(self, skips: List[torch.Tensor], text: torch.Tensor):
        b = skips[0].shape[0]
        if text.ndim == 2:
            text = text.unsqueeze(0).expand(b, -1, -1)
        if text.ndim != 3 or text.shape[0] != b or text.shape[2] != self.config.text_dim:
            raise ValueError(f"text must be (B={b}, N, {self.config.text_dim}) or (N, {self.config.text_dim}), "
                             f"got {tuple(text.shape)}")
        q = self.prompt_decoder(text, skips[self.config.attend_stage])  # (B, N, D)
        guidance: List[Optional[torch.Tensor]] = [None] * self.decoder.num_stages
        for s, adapter in self.adapters.items():
            guidance[int(s)] = adapter(q)  # (B, N, G, C_s)
        return self.decoder(skips, guidance, text.shape[1])

    def forward(self, x: torch.Tensor, text: Optional[torch.Tensor] = None):
        if text is None:  # prompts bound beforehand, so code that calls network(x) (nnU-Net's) works
            text = self.bound_text
            if text is None:
                raise ValueError("no text given and none bound (see bind_text)")
        return self.decode(self.encode(x), text)

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
