"""A UNet decoder that fuses text guidance after the convolutions of its stages.

Mirrors dynamic-network-architectures' ``UNetDecoder`` (transposed conv -> concat skip -> stage convs
-> segmentation head) and reads its widths, strides and kernels from the encoder object, so the shape
of the network is stated once, in the plans. Fused stages carry C_s + G channels onward.

Prompts are batched: the decoder works on B*N rows (image-major). Rows are expanded from B to B*N at
the first fused stage only, so stages before it (prompt-independent) run once per image. With light stages
(``TextNetworkConfig.light_stages``) the top stages also run once per image, in an image-only decoder, and
each prompt reaches them through a thin path of a few channels. With a shared decoder
(``TextNetworkConfig.shared_decoder``) every stage runs once per image and prompts only read it out.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from dynamic_network_architectures.building_blocks.helper import get_matching_convtransp
from dynamic_network_architectures.building_blocks.simple_conv_blocks import StackedConvBlocks
from torch import nn

from nnunetv2_text.network.blocks import expand_for_prompts, fuse


class TextFusionDecoder(nn.Module):
    def __init__(self, encoder: nn.Module, n_conv_per_stage: Union[int, Sequence[int]], guidance_dim: int,
                 fusion_stages: Sequence[int], outputs_per_prompt: int = 1, deep_supervision: bool = True,
                 nonlin_first: bool = False, final_dot: bool = False, light_stages: Sequence[int] = (),
                 light_channels: int = 8, shared: bool = False):
        super().__init__()
        chans = list(encoder.output_channels)
        n_dec = len(chans) - 1
        if isinstance(n_conv_per_stage, int):
            n_conv_per_stage = [n_conv_per_stage] * n_dec
        if len(n_conv_per_stage) != n_dec:
            raise ValueError(f"n_conv_per_stage_decoder has {len(n_conv_per_stage)} entries, need {n_dec}")
        self.deep_supervision = deep_supervision
        self.fusion_stages = tuple(sorted(fusion_stages))
        self.guidance_dim = guidance_dim
        self.outputs_per_prompt = outputs_per_prompt
        #: the full-resolution output is the last stage's features dotted with a per-prompt vector
        #: (VoxTell), so that stage has no head
        self.final_dot = final_dot
        transpconv = get_matching_convtransp(conv_op=encoder.conv_op)

        self.num_stages = n_dec
        self.light_stages = tuple(sorted(light_stages))
        self.shared = shared
        n_deep = 0 if shared else n_dec - len(self.light_stages)

        def conv_stage(in_c: int, out_c: int, n_conv: int, kernel) -> nn.Module:
            return StackedConvBlocks(n_conv, encoder.conv_op, in_c, out_c, kernel, 1, encoder.conv_bias,
                                     encoder.norm_op, encoder.norm_op_kwargs, encoder.dropout_op,
                                     encoder.dropout_op_kwargs, encoder.nonlin, encoder.nonlin_kwargs, nonlin_first)

        def up_stage(s: int, below: int) -> tuple:
            """Decoder stage s (0: lowest resolution) as UNetDecoder builds it: transposed conv, then the
            convolutions over (upsampled, skip)."""
            skip_c, stride = chans[-(s + 2)], encoder.strides[-(s + 1)]
            return (transpconv(below, skip_c, stride, stride, bias=encoder.conv_bias),
                    conv_stage(2 * skip_c, skip_c, n_conv_per_stage[s], encoder.kernel_sizes[-(s + 2)]))

        # per-prompt stages (all of them unless light stages are asked for)
        self.transpconvs, self.stages, self.seg_layers = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        below = chans[-1]
        for s in range(n_deep):
            up, stage = up_stage(s, below)
            self.transpconvs.append(up)
            self.stages.append(stage)
            out_c = chans[-(s + 2)] + (guidance_dim if s in self.fusion_stages else 0)
            # heads are always built (so weights load with or without deep supervision)
            if not (final_dot and s == n_dec - 1):
                self.seg_layers.append(encoder.conv_op(out_c, outputs_per_prompt, 1, 1, 0, bias=True))
            below = out_c
        if self.light_stages or shared:
            self._build_shared_decoder(encoder, up_stage)
        if self.light_stages:
            self._build_light_path(encoder, conv_stage, below, light_channels)

    def _build_shared_decoder(self, encoder: nn.Module, up_stage) -> None:
        """An image-only decoder, run once per image: nnU-Net's UNetDecoder without its heads."""
        chans = list(encoder.output_channels)
        self.shared_transpconvs, self.shared_stages = nn.ModuleList(), nn.ModuleList()
        for s in range(self.num_stages):
            up, stage = up_stage(s, chans[-(s + 1)])
            self.shared_transpconvs.append(up)
            self.shared_stages.append(stage)

    def _build_light_path(self, encoder: nn.Module, conv_stage, below: int, light_channels: int) -> None:
        """The light stages: the shared decoder's top stages are the features the prompts share; the thin
        per-prompt path (upsample the prompt's state, add its dot products with the shared features, mix by
        a 1x1x1 convolution) has a head per light stage."""
        transpconv = get_matching_convtransp(conv_op=encoder.conv_op)
        self.light_up, self.light_mix = nn.ModuleList(), nn.ModuleList()
        for s in self.light_stages:
            stride = encoder.strides[-(s + 1)]
            self.light_up.append(transpconv(below, light_channels, stride, stride, bias=encoder.conv_bias))
            self.light_mix.append(conv_stage(2 * light_channels, light_channels, 1, 1))
            self.seg_layers.append(encoder.conv_op(light_channels, self.outputs_per_prompt, 1, 1, 0, bias=True))
            below = light_channels

    def forward(self, skips: List[torch.Tensor], guidance: List[Optional[torch.Tensor]], num_prompts: int):
        """skips: encoder outputs (B, C_k, ...), bottleneck last; guidance[s]: (B, N, G, C_s) or None.

        Returns (B, N*K, ...) logits (K = outputs_per_prompt), or with deep supervision a list of them,
        highest resolution first (the order nnU-Net's loss expects).
        """
        if self.shared:
            return self._read_out(skips, guidance, num_prompts)
        b = skips[0].shape[0]
        x, expanded, outs = skips[-1], False, []
        last = self.num_stages - 1
        for s in range(len(self.stages)):
            skip = skips[-(s + 2)]
            x = self.transpconvs[s](x)
            x = self.stages[s](torch.cat((x, expand_for_prompts(skip, num_prompts) if expanded else skip), 1))
            if s in self.fusion_stages or (self.final_dot and s == last):
                if not expanded:
                    x, expanded = expand_for_prompts(x, num_prompts), True
            if s in self.fusion_stages:
                x = fuse(x, guidance[s].flatten(0, 1))
            if self.final_dot and s == last:
                y = torch.einsum("bc...,bgc->bg...", x, guidance[s].flatten(0, 1).to(x.dtype))
                outs.append(self._per_prompt(y, b, num_prompts, expanded))
            elif self.deep_supervision or s == last or (self.light_stages and s == len(self.stages) - 1):
                coarse = self.seg_layers[s](x)
                if self.deep_supervision or s == last:
                    outs.append(self._per_prompt(coarse, b, num_prompts, expanded))
        if self.light_stages:
            shared = skips[-1]
            for s in range(self.num_stages):
                shared = self._shared_stage(s, shared, skips)
                if s < self.light_stages[0]:
                    continue
                i = s - self.light_stages[0]
                if not expanded:
                    x, expanded = expand_for_prompts(x, num_prompts), True
                    coarse = expand_for_prompts(coarse, num_prompts)
                # (B, C, ...) x (B, N, L, C) -> (B*N, L, ...) without copying the shared features per prompt
                t = guidance[s].to(shared.dtype)
                d = torch.einsum("bc...,bnlc->bnl...", shared, t).flatten(0, 1)
                x = self.light_mix[i](torch.cat((self.light_up[i](x), d), 1))
                # a light stage refines the upsampled logits of the stage below: which structure a prompt
                # names is decided per prompt at low resolution, the thin path only sharpens its boundary
                coarse = self.seg_layers[s](x) + self._upsampled(coarse, x)
                if self.deep_supervision or s == last:
                    outs.append(self._per_prompt(coarse, b, num_prompts, expanded))
        outs = outs[::-1]
        return outs if self.deep_supervision else outs[0]

    def _read_out(self, skips: List[torch.Tensor], guidance: List[torch.Tensor], num_prompts: int):
        """Shared decoder: each stage's logits (B, N*K, ...) are every prompt's read-out of the stage's
        features (guidance[s]: (B, N, K, C_s + 1), the vector and the bias) plus the upsampled logits of the
        stage below. No per-prompt copy of any feature map is made."""
        x, coarse, outs = skips[-1], None, []
        for s in range(self.num_stages):
            x = self._shared_stage(s, x, skips)
            g = guidance[s].to(x.dtype)
            bias = g[..., -1].reshape(*g.shape[:3], *[1] * (x.ndim - 2))
            y = (torch.einsum("bc...,bnkc->bnk...", x, g[..., :-1]) + bias).flatten(1, 2)
            if coarse is not None:
                y = y + self._upsampled(coarse, y)
            coarse = y
            if self.deep_supervision or s == self.num_stages - 1:
                outs.append(y)
        outs = outs[::-1]
        return outs if self.deep_supervision else outs[0]

    def _shared_stage(self, s: int, below: torch.Tensor, skips: List[torch.Tensor]) -> torch.Tensor:
        """Stage s of the image-only decoder (once per image)."""
        return self.shared_stages[s](torch.cat((self.shared_transpconvs[s](below), skips[-(s + 2)]), 1))

    @staticmethod
    def _upsampled(coarse: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Logits of the stage below at this stage's resolution (light and shared decoders refine them)."""
        return F.interpolate(coarse, size=like.shape[2:], mode="trilinear" if like.ndim == 5 else "bilinear")

    def deep_supervision_heads(self) -> List[nn.Module]:
        """The heads used only for deep supervision (frozen when training without it); with light stages
        the last per-prompt stage's head feeds the output too."""
        if self.light_stages:
            return list(self.seg_layers)[:len(self.stages) - 1]
        return list(self.seg_layers) if self.final_dot else list(self.seg_layers)[:-1]

    @staticmethod
    def _per_prompt(y: torch.Tensor, b: int, n: int, expanded: bool) -> torch.Tensor:
        """(B*N, K, ...) -> (B, N*K, ...); an unexpanded (B, K, ...) head is shared by all prompts."""
        if not expanded:
            return y.repeat(1, n, *([1] * (y.ndim - 2)))
        return y.reshape(b, n * y.shape[1], *y.shape[2:])
