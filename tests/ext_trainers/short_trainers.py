"""Short-schedule trainers for the test suite, found by nnU-Net through nnUNet_extTrainer like a user's own."""
from nnunetv2_text.training.cowtalk import CoWTalkRefineTrainer
from nnunetv2_text.interop.voxtell import VOXTELL_ARCH
from nnunetv2_text.training.trainer import TextFusionTrainer
from nnunetv2_text.training.voxtell import TextFusionTrainer_VoxTell


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


class TextFusionTrainer_VoxTellTest(TextFusionTrainer_VoxTell):
    """VoxTell fine-tuning on a CPU-sized VoxTell: narrow stages, and total stride 16 so that the tests' 32³
    patch keeps a 2³ bottleneck (tests/test_voxtell.py builds the matching VoxTellModel)."""

    epochs = 1
    iterations_per_epoch = 3
    val_iterations_per_epoch = 1
    warmup_epochs = 1
    voxtell_arch = {**VOXTELL_ARCH, "features_per_stage": [4, 8, 16, 16, 16, 16], "n_blocks_per_stage": [1] * 6,
                    "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 1, 1]]}
    network_overrides = {**TextFusionTrainer_VoxTell.network_overrides, "prompt_dim": 16, "guidance_dim": 2,
                         "adapter_hidden": 8}
