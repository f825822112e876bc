"""TextFusionTrainer_VoxTell: fine-tune imported VoxTell weights with text, on a user's dataset.

VoxTell's own trainer keeps only the image encoder and trains a plain multi-class nnU-Net. Here the whole
text network is kept: ``nnUNetv2_train ID 3d_fullres 0 -tr TextFusionTrainer_VoxTell -pretrained_weights
<imported>/fold_0/checkpoint_final.pth`` loads every VoxTell tensor (nnU-Net's loader skips only the
deep-supervision heads, ``seg_layers``) and trains with this project's prompt sampling (partial labels
included) and loss. The dataset's prompts must be embedded with VoxTell's recipe
(``nnUNetv2_text_embed -d ID --model voxtell:Qwen/Qwen3-Embedding-4B``), or the text projection's shape
will not match.

As VoxTell's trainer does, the encoder is VoxTell's whatever the plans say; the plans still give the
patch (which must be divisible by 32, the encoder's total stride), spacing and normalisation.
"""
from __future__ import annotations

import numpy as np
import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

from nnunetv2_text.errors import UserInputError
from nnunetv2_text.interop.voxtell import VOXTELL_ARCH, VOXTELL_REQUIRES_IMPORT
from nnunetv2_text.network import unwrap_network
from nnunetv2_text.network.config import voxtell_config
from nnunetv2_text.training.trainer import TextFusionTrainer


class WarmupPolyLRScheduler(PolyLRScheduler):
    """Linear warm-up over the first ``warmup_steps``, then nnU-Net's poly decay over the rest: a
    440M-parameter pretrained network is not hit with the full learning rate on its first, random-headed
    steps (VoxTell's own trainer warms up for 50 epochs)."""

    def __init__(self, optimizer, initial_lr: float, max_steps: int, warmup_steps: int):
        self.warmup_steps = warmup_steps
        super().__init__(optimizer, initial_lr, max_steps)

    def step(self, current_step=None):
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        if current_step < self.warmup_steps:
            lr = self.initial_lr * (current_step + 1) / self.warmup_steps
        else:
            span = max(1, self.max_steps - self.warmup_steps)
            lr = self.initial_lr * (1 - (current_step - self.warmup_steps) / span) ** self.exponent
        for group in self.optimizer.param_groups:
            group["lr"] = lr


class TextFusionTrainer_VoxTell(TextFusionTrainer):
    #: AdamW at a tenth of the from-scratch rate, after a linear warm-up: fine-tuning, not training
    learning_rate = 1e-4
    warmup_epochs = 50
    #: the image encoder (and decoder widths) of the imported weights, used whatever the plans say
    voxtell_arch: dict = VOXTELL_ARCH
    #: VoxTell's text and prompt-decoder widths (text_dim comes from the dataset's embedding cache)
    network_overrides = {k: v for k, v in voxtell_config().to_dict().items() if k != "text_dim"}

    def initialize(self):
        patch = list(self.configuration_manager.patch_size)
        stride = int(np.prod(np.asarray(self.voxtell_arch["strides"]), axis=0).max())
        if any(p % stride for p in patch):
            raise UserInputError(f"{self.__class__.__name__}: patch size {patch} of the plans "
                                 f"'{self.plans_manager.plans_name}' is not divisible by {stride} (VoxTell's "
                                 f"encoder downsamples by {stride}); choose such a patch in the plans")
        super().initialize()

    def network_config_overrides(self) -> dict:
        overrides = dict(self.network_overrides)
        if overrides.get("fusion_stages") is not None:
            overrides["fusion_stages"] = tuple(overrides["fusion_stages"])
        return overrides

    def architecture(self, configuration_manager) -> tuple:
        return self.voxtell_arch, VOXTELL_REQUIRES_IMPORT

    def _get_deep_supervision_scales(self):
        strides = np.vstack(self.voxtell_arch["strides"])
        return list(list(i) for i in 1 / np.cumprod(strides, axis=0))[:-1]

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay)
        warmup = min(self.warmup_epochs, max(1, self.num_epochs // 5))
        return optimizer, WarmupPolyLRScheduler(optimizer, self.initial_lr, self.num_epochs, warmup)

    def on_train_start(self):
        super().on_train_start()
        # -pretrained_weights overwrote the prompt centre with the import's; it only serves similarity
        # reports (VoxTell's network reads raw embeddings), so it is set back to this dataset's vocabulary
        unwrap_network(self.network).prompt_decoder.set_text_center(torch.from_numpy(self.text.prompt_embeddings()))

    def text_checkpoint_entry(self) -> dict:
        """The predictor rebuilds the encoder from here, not from the plans."""
        return {**super().text_checkpoint_entry(), "arch_kwargs": self.voxtell_arch,
                "arch_requires_import": VOXTELL_REQUIRES_IMPORT}
