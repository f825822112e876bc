"""Short-schedule trainers for the test suite, found by nnU-Net through nnUNet_extTrainer like a user's own."""
from nnunetv2_text.training.cowtalk import CoWTalkRefineTrainer
from nnunetv2_text.training.trainer import TextFusionTrainer


class CoWTalkRefineTrainer_testSmoke(CoWTalkRefineTrainer):
    epochs = 1
    iterations_per_epoch = 3
    val_iterations_per_epoch = 1
    network_overrides = {"prompt_dim": 64, "prompt_layers": 1, "prompt_heads": 4, "prompt_ffn_dim": 128,
                         "adapter_hidden": 64}


class TextFusionTrainer_testSmoke(TextFusionTrainer):
    """A few steps: for smoke runs of whole pipelines (e.g. benchmarks/mni152_results.py on a CPU)."""

    epochs = 1
    iterations_per_epoch = 3
    val_iterations_per_epoch = 1
    network_overrides = CoWTalkRefineTrainer_testSmoke.network_overrides
