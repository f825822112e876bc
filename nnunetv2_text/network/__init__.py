"""Network: imports only torch and dynamic-network-architectures; takes embeddings as tensors."""
from nnunetv2_text.network.builder import build_text_network, resolve_arch_kwargs
from nnunetv2_text.network.config import TextNetworkConfig
from nnunetv2_text.network.text_unet import TextPromptableUNet, unwrap_network

__all__ = ["build_text_network", "resolve_arch_kwargs", "TextNetworkConfig", "TextPromptableUNet", "unwrap_network"]
