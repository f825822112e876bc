"""Trainer variants that change one thing each, named as nnU-Net names its own."""
from __future__ import annotations

import torch

from nnunetv2_text.training.trainer import TextFusionTrainer


class TextFusionTrainer_1epoch(TextFusionTrainer):
    epochs = 1


class TextFusionTrainer_5epochs(TextFusionTrainer):
    epochs = 5


class TextFusionTrainer_10epochs(TextFusionTrainer):
    epochs = 10


class TextFusionTrainer_50epochs(TextFusionTrainer):
    epochs = 50


class TextFusionTrainer_100epochs(TextFusionTrainer):
    epochs = 100


class TextFusionTrainer_250epochs(TextFusionTrainer):
    epochs = 250


class TextFusionTrainer_500epochs(TextFusionTrainer):
    epochs = 500


class TextFusionTrainer_noDS(TextFusionTrainer):
    """No deep supervision: only the highest-resolution output is trained."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False


class TextFusionTrainer_lateFusion(TextFusionTrainer_noDS):
    """Fusion at the highest-resolution decoder stage only (the MaskFormer-style ablation baseline).

    Lower stages carry no prompt information, so their outputs could not be supervised per prompt:
    like VoxTell's late-fusion baseline this trains the final output only.
    """

    network_overrides = {"fusion_stages": (-1,)}


class TextFusionTrainer_demo(TextFusionTrainer):
    """The CPU demo's schedule: a few short epochs and a slim prompt decoder (``nnUNetv2_text_demo``).

    800 steps at lr 3e-3, because the full schedule's 1e-3 did not learn the toy's thin rod in a CPU
    budget (figures in docs/RESULTS.md); the tests train exactly this schedule.
    """

    epochs = 16
    iterations_per_epoch = 50
    val_iterations_per_epoch = 2
    learning_rate = 3e-3
    network_overrides = {"prompt_dim": 128, "prompt_layers": 2, "prompt_heads": 4, "prompt_ffn_dim": 256,
                         "adapter_hidden": 256}


class TextFusionTrainer_noForeign(TextFusionTrainer):
    """No foreign prompts in training (the ablation of language robustness)."""

    foreign_prompt_probability = 0.0


class TextFusionTrainer_light(TextFusionTrainer):
    """The two highest-resolution decoder stages shared by all prompts (issue #14; docs/PERFORMANCE.md)."""

    network_overrides = {"light_stages": 2}


class TextFusionTrainer_shared(TextFusionTrainer):
    """Every decoder stage shared by all prompts, each prompt a linear read-out per stage (issue #25): the
    default since then, kept under its name for the models trained with it."""

    network_overrides = {"shared_decoder": True}


class TextFusionTrainer_32prompts(TextFusionTrainer):
    """32 present concepts per sample instead of every concept: a step about 2.9x faster on a vocabulary of
    ~190 concepts, for validation Dice 0.585 instead of 0.643 on the atlas CPU preset (docs/DECISIONS.md)."""

    num_positive_prompts = 32


class TextFusionTrainer_everyStage(TextFusionTrainer):
    """Every decoder stage per prompt: VoxTell's design, the default until issue #25."""

    shared_decoder = False


class TextFusionTrainer_emptyLoss(TextFusionTrainer):
    """Empty-target prompts also scored by their predicted volume (:mod:`.loss`; issue #10)."""

    empty_target_tolerance = 0.01
