"""Trainer variants that exist for the benchmarks only (robustness.py, light_decoder.py, merge.py), found by
nnU-Net through nnUNet_extTrainer when a benchmark adds this folder (``common.benchmark_env``).

Each changes one thing against a product variant; users choose among those (training/variants.py), and
these stay out of their ``nnUNetv2_train -tr`` list. Names are kept: checkpoints store them.
"""
from nnunetv2_text.training.cowtalk import CoWTalkRefineTrainer_cpu
from nnunetv2_text.training.variants import (TextFusionTrainer_demo, TextFusionTrainer_emptyLoss,
                                             TextFusionTrainer_light, TextFusionTrainer_shared)


class TextFusionTrainer_demoLight(TextFusionTrainer_demo):
    """The demo's schedule with the light decoder (benchmarks/light_decoder.py compares the two)."""

    network_overrides = {**TextFusionTrainer_demo.network_overrides, **TextFusionTrainer_light.network_overrides}


class TextFusionTrainer_demoLight1(TextFusionTrainer_demo):
    """The demo's schedule with only the top decoder stage shared (a point on the cost-Dice curve)."""

    network_overrides = {**TextFusionTrainer_demo.network_overrides, "light_stages": 1}


class TextFusionTrainer_demoShared(TextFusionTrainer_demo):
    """The demo's schedule with the shared decoder (every stage once per image, a read-out per prompt): the
    demo itself since issue #25 made it the default; kept for the runs that named it."""

    network_overrides = {**TextFusionTrainer_demo.network_overrides, **TextFusionTrainer_shared.network_overrides}


class TextFusionTrainer_demoEveryStage(TextFusionTrainer_demo):
    """The demo's schedule with every decoder stage per prompt: the demo's design until issue #25, the
    reference light_decoder.py compares against."""

    shared_decoder = False


class TextFusionTrainer_demoNoForeign(TextFusionTrainer_demo):
    """The demo's schedule without foreign prompts (benchmarks/robustness.py compares the two)."""

    foreign_prompt_probability = 0.0


class TextFusionTrainer_demo32epochs(TextFusionTrainer_demo):
    """The demo's schedule run twice as long (1600 steps): does an 800-step result hold with more steps?"""

    epochs = 32


class TextFusionTrainer_demoNoForeign32epochs(TextFusionTrainer_demo32epochs):
    """The 1600-step schedule without foreign prompts: the same-length ablation for _demo32epochs."""

    foreign_prompt_probability = 0.0


class TextFusionTrainer_demoForeign050_32epochs(TextFusionTrainer_demo32epochs):
    """The 1600-step schedule with foreign prompts in half the samples, the earlier default (the
    comparison behind today's 0.2 in docs/RESULTS.md)."""

    foreign_prompt_probability = 0.5


class TextFusionTrainer_demoForeignReplaces(TextFusionTrainer_demo):
    """The demo's schedule with the earlier foreign-prompt rule: it may replace a present concept."""

    foreign_replaces_present = True


class TextFusionTrainer_demoNoPartialLabels(TextFusionTrainer_demo):
    """The demo's schedule treating unlabelled structures of a merged dataset as absent (the naive
    ablation that benchmarks/merge.py compares with partial-label sampling)."""

    use_partial_labels = False


class TextFusionTrainer_demoEmptyLoss(TextFusionTrainer_demo):
    """The demo's schedule with the empty-target loss term (benchmarks/robustness.py --trainers)."""

    empty_target_tolerance = TextFusionTrainer_emptyLoss.empty_target_tolerance


class TextFusionTrainer_demoEmptyLossNoPartialLabels(TextFusionTrainer_demoEmptyLoss):
    """The naive merge ablation under the empty-target loss (benchmarks/merge.py --trainers)."""

    use_partial_labels = False


class CoWTalkRefineTrainer_cpuVerb(CoWTalkRefineTrainer_cpu):
    """The CPU refiner schedule with half of the invertible errors asked for in reverse and the demo's
    learning rate (3e-3): does a stronger push make the 600-step refiner read the verb? (issue #26; the
    default schedule's refiner answered the contrary instruction as the right one)"""

    p_inverse = 0.5
    learning_rate = 3e-3


class CoWTalkRefineTrainer_cpuLong(CoWTalkRefineTrainer_cpu):
    """1440 steps instead of 600 (issue #26): whether a longer schedule closes the right / contrary gap and
    stops the network lowering the input's Dice (benchmarks/cowtalk_refinement.py --trainer)."""

    epochs = 36
