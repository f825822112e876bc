"""Trainers of the brain-atlas benchmark (benchmarks/atlas.py), found by nnU-Net through nnUNet_extTrainer.

They live with the benchmark, not in the product: a user chooses among the product's variants, these only
fix one benchmark's schedule. Each text variant changes one thing against ``TextFusionTrainer_atlasCPU``.
"""
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_text.training.base import TextTrainerBase
from nnunetv2_text.training.trainer import TextFusionTrainer
from nnunetv2_text.training.variants import (TextFusionTrainer_demo, TextFusionTrainer_lateFusion, TextFusionTrainer_light,
                                             TextFusionTrainer_shared)

#: the CPU preset's schedule: 2400 steps of batch 2 at 6 mm. 500 steps at 4 mm taught neither model a region,
#: and plain nnU-Net's pseudo Dice was still 0 after 900 of 1200 steps at 5 mm (docs/EVALUATION.md); a 6 mm
#: step costs about two thirds of a 5 mm one
CPU_EPOCHS, CPU_ITERATIONS, CPU_VAL_ITERATIONS = 96, 25, 2


class TextFusionTrainer_atlasCPU(TextFusionTrainer_demo):
    """The text model on the CPU preset: the demo's slim prompt decoder and learning rate, 2400 steps.

    Four present concepts per sample, not two: plain nnU-Net is taught all 116 labels at every step, and two
    per sample gave each of the atlas's ~200 concepts about ten exposures in 500 steps. Four keeps the
    every-stage decoder's step (the slowest model) near the 45 minutes.
    """

    num_positive_prompts = 4
    #: every decoder stage per prompt: the benchmark's 'text' model, the design this preset first measured;
    #: the default since (the shared decoder) is its own model, ``_shared``
    shared_decoder = False
    epochs = CPU_EPOCHS
    iterations_per_epoch = CPU_ITERATIONS
    val_iterations_per_epoch = CPU_VAL_ITERATIONS


class TextFusionTrainer_atlasCPU_lateFusion(TextFusionTrainer_atlasCPU, TextFusionTrainer_lateFusion):
    """Fusion at the highest-resolution stage only, without deep supervision (VoxTell's ablation): the
    product's ``_lateFusion`` on this schedule."""

    network_overrides = {**TextFusionTrainer_atlasCPU.network_overrides,
                         **TextFusionTrainer_lateFusion.network_overrides}


class TextFusionTrainer_atlasCPU_light(TextFusionTrainer_atlasCPU):
    """The light decoder (top stages shared by all prompts) on the CPU preset."""

    network_overrides = {**TextFusionTrainer_atlasCPU.network_overrides, **TextFusionTrainer_light.network_overrides}


class TextFusionTrainer_atlasCPU_shared(TextFusionTrainer_atlasCPU):
    """The shared decoder (every stage once per image, a read-out per prompt) on the CPU preset."""

    network_overrides = {**TextFusionTrainer_atlasCPU.network_overrides, **TextFusionTrainer_shared.network_overrides}


class TextFusionTrainer_atlasCPU_sharedMany(TextFusionTrainer_atlasCPU_shared):
    """The shared decoder taught 32 present concepts per sample instead of 4 (ablation; the product's
    ``TextFusionTrainer_32prompts``).

    Plain nnU-Net with the same optimiser learnt the regions (0.685) where the shared decoder did not
    (0.089): its softmax teaches every label at every step, four prompts teach 4 of ~200 concepts. On the
    shared decoder a prompt costs a read-out, not a decoder, so a sample can carry many.
    """

    num_positive_prompts = 32


class TextFusionTrainer_atlasCPU_sharedAll(TextFusionTrainer_atlasCPU_shared):
    """The shared decoder taught every concept per sample (188 present and one absent of the 189): a prompt
    per label at every step, as plain nnU-Net's softmax. The product default's count
    (``TextFusionTrainer.SHARED_DECODER_PROMPTS``) on the CPU preset."""

    num_positive_prompts = TextFusionTrainer.SHARED_DECODER_PROMPTS


class nnUNetTrainer_noLRMirror(nnUNetTrainer):
    """Plain nnU-Net as a user would train it for lateral labels: every mirror axis but left-right, as the
    text model (a left-right mirror would turn Hippocampus_L into a right one under the same label)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self._left_right_axis = None

    left_right_axis = TextTrainerBase.left_right_axis

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        from nnunetv2_text.utils.laterality import mirror_axes_without

        rot, dummy_2d, patch, mirror_axes = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        mirror_axes = mirror_axes_without(mirror_axes, self.left_right_axis())
        self.inference_allowed_mirroring_axes = mirror_axes
        return rot, dummy_2d, patch, mirror_axes


class nnUNetTrainer_noLRMirror_atlasCPU(nnUNetTrainer_noLRMirror):
    """Plain nnU-Net on the CPU preset: the same number of steps and batches as the text models, nnU-Net's
    own optimiser and learning rate."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = CPU_EPOCHS
        self.num_iterations_per_epoch = CPU_ITERATIONS
        self.num_val_iterations_per_epoch = CPU_VAL_ITERATIONS


class nnUNetTrainer_noLRMirror_AdamW(nnUNetTrainer_noLRMirror):
    """Plain nnU-Net with the text models' optimiser and learning rate (AdamW, poly): an ablation that
    separates the optimiser from the text. On the CPU preset's budget nnU-Net's SGD taught plain nnU-Net no
    region while the text models learned (docs/EVALUATION.md)."""

    text_trainer = TextFusionTrainer

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = self.text_trainer.learning_rate

    configure_optimizers = TextTrainerBase.configure_optimizers


class nnUNetTrainer_noLRMirror_atlasCPU_AdamW(nnUNetTrainer_noLRMirror_atlasCPU, nnUNetTrainer_noLRMirror_AdamW):
    text_trainer = TextFusionTrainer_atlasCPU


class TextFusionTrainer_atlasSmoke(TextFusionTrainer_atlasCPU):
    """Two steps: the benchmark's smoke preset checks the pipeline, its figures mean nothing."""

    epochs, iterations_per_epoch, val_iterations_per_epoch = 1, 2, 1


class TextFusionTrainer_atlasSmoke_lateFusion(TextFusionTrainer_atlasSmoke, TextFusionTrainer_lateFusion):
    network_overrides = TextFusionTrainer_atlasCPU_lateFusion.network_overrides


class TextFusionTrainer_atlasSmoke_light(TextFusionTrainer_atlasSmoke):
    """The smoke preset's 8 mm plans have two decoder stages: only the top one is shared."""

    network_overrides = {**TextFusionTrainer_atlasCPU.network_overrides, "light_stages": 1}


class TextFusionTrainer_atlasSmoke_shared(TextFusionTrainer_atlasSmoke):
    network_overrides = TextFusionTrainer_atlasCPU_shared.network_overrides


class TextFusionTrainer_atlasSmoke_sharedMany(TextFusionTrainer_atlasSmoke_shared):
    num_positive_prompts = TextFusionTrainer_atlasCPU_sharedMany.num_positive_prompts


class TextFusionTrainer_atlasSmoke_sharedAll(TextFusionTrainer_atlasSmoke_shared):
    num_positive_prompts = TextFusionTrainer_atlasCPU_sharedAll.num_positive_prompts  # capped at the concepts


class nnUNetTrainer_noLRMirror_atlasSmoke(nnUNetTrainer_noLRMirror):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = 1, 2, 1


class nnUNetTrainer_noLRMirror_atlasSmoke_AdamW(nnUNetTrainer_noLRMirror_atlasSmoke, nnUNetTrainer_noLRMirror_AdamW):
    text_trainer = TextFusionTrainer_atlasSmoke
