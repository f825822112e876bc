"""The one builder: trainer and predictor both construct the text network here.

Inputs are the plans' ``network_arch_init_kwargs`` (with their ``_kw_requires_import`` names), the
number of input channels and a :class:`TextNetworkConfig`. ResEnc plans (``n_blocks_per_stage``) get
dynamic-network-architectures' ``ResidualEncoder``; plain plans (``n_conv_per_stage``) its
``PlainConvEncoder``. The encoder's parameter names equal those of nnU-Net's own UNets (``encoder.*``),
so its weights transfer by name; nnU-Net's ``-pretrained_weights`` loader, which requires every key of
the network, accepts a checkpoint of another text model with the same plans and text config.
"""
from __future__ import annotations

import pydoc
from typing import Iterable, Mapping

from dynamic_network_architectures.building_blocks.plain_conv_encoder import PlainConvEncoder
from dynamic_network_architectures.building_blocks.residual_encoders import ResidualEncoder

from nnunetv2_text.network.config import TextNetworkConfig
from nnunetv2_text.network.text_unet import TextPromptableUNet

_ENCODER_KEYS = ("n_stages", "features_per_stage", "conv_op", "kernel_sizes", "strides", "conv_bias", "norm_op",
                 "norm_op_kwargs", "dropout_op", "dropout_op_kwargs", "nonlin", "nonlin_kwargs")


def resolve_arch_kwargs(arch_kwargs: Mapping, requires_import: Iterable[str]) -> dict:
    """Replace the plans' dotted class names (e.g. 'torch.nn.modules.conv.Conv3d') by the classes."""
    out = dict(arch_kwargs)
    for k in requires_import:
        if out.get(k) is not None and isinstance(out[k], str):
            located = pydoc.locate(out[k])
            if located is None:
                raise ImportError(f"plans name '{out[k]}' for '{k}', which cannot be imported")
            out[k] = located
    return out


def build_text_network(arch_kwargs: Mapping, requires_import: Iterable[str], num_input_channels: int,
                       config: TextNetworkConfig, deep_supervision: bool = True,
                       initialize: bool = True) -> TextPromptableUNet:
    kw = resolve_arch_kwargs(arch_kwargs, requires_import)
    num_input_channels += config.extra_input_channels()
    common = {k: kw[k] for k in _ENCODER_KEYS if k in kw}
    if "n_blocks_per_stage" in kw:
        extra = {k: kw[k] for k in ("block", "bottleneck_channels", "stem_channels") if kw.get(k) is not None}
        encoder = ResidualEncoder(num_input_channels, n_blocks_per_stage=kw["n_blocks_per_stage"],
                                  return_skips=True, **common, **extra)
    elif "n_conv_per_stage" in kw:
        encoder = PlainConvEncoder(num_input_channels, n_conv_per_stage=kw["n_conv_per_stage"], return_skips=True,
                                   nonlin_first=kw.get("nonlin_first", False), **common)
    else:
        raise ValueError("plans arch kwargs name neither n_blocks_per_stage (ResEnc) nor n_conv_per_stage")
    # as in dynamic-network-architectures' PlainConvUNet, the decoder's conv blocks follow the encoder's order
    # (ResEnc plans have no nonlin_first: conv -> norm -> nonlin in both)
    net = TextPromptableUNet(encoder, config, kw["n_conv_per_stage_decoder"], deep_supervision,
                             nonlin_first=kw.get("nonlin_first", False))
    if initialize:
        net.apply(net.initialize)
        if config.shape_prior_channels is not None:
            net.zero_output_heads()
    return net
