"""CoWTalkRefineTrainer: repair an erroneous vessel shape as a corrective instruction says.

Input: the image (channel 0, absent with ``--no-image``) and the erroneous shape as one binary channel
per class; text: the case's instruction; output: the full multi-class label map (one prompt with K
outputs: ``outputs_per_prompt`` = the dataset's classes), trained with nnU-Net's own Dice + CE. The
output is the input shape as a logit prior plus a learned correction that starts at zero
(``shape_prior_logit``), so the refiner starts from "change nothing" and learns only the edits.

Augmentations of the CoWTalk paper, applied per sample and error at batch time:
- with ``p_drop_error`` an error is dropped: its class channel shows the correct shape and its
  instruction is removed;
- with ``p_leave_uncorrected`` an error stays in the target and its instruction is removed (the model
  must change only what it is told);
- with ``p_inverse`` an error whose edit has an inverse is asked for in reverse: the input shows the
  correct shape, the target the erroneous one, and the instruction asks for the error ("Thin the left
  MCA." where the repair would thicken it). The same vessel then goes either way from the same shape,
  so only the instruction's verb tells the network which (issue #26; without these pairs the shape alone
  told it, and a contrary instruction gave the right one's output);
- the short or the long instruction is used with equal probability.
nnU-Net's intensity augmentations touch only the image channel; shape channels are re-binarised after
the spatial transform (which interpolates every channel).
"""
from __future__ import annotations

import json

import numpy as np
import torch
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch.nn import functional as F

from nnunetv2_text.text.dataset_text import load_dataset_text, text_folder
from nnunetv2_text.network.blocks import append_constant_channels
from nnunetv2_text.text.instructions import (INSTRUCTIONS_FILE, all_instruction_texts, contiguous_id,
                                             instruction_directions, inverted, join_instructions,
                                             original_to_contiguous)
from nnunetv2_text.training.channel_transforms import OnlyChannels, is_intensity_transform
from nnunetv2_text.training.base import TextTrainerBase
from nnunetv2_text.training.loss import EditVoxelLoss


class CoWTalkRefineTrainer(TextTrainerBase):
    """One instruction per sample (no negatives, no foreign prompts); nnU-Net's own multi-class Dice + CE
    and its per-class validation step, with the instruction bound to the network (the base's)."""

    p_drop_error: float = 0.2
    p_leave_uncorrected: float = 0.1
    #: an invertible error is asked for in reverse this often (its repair: 1 - the three probabilities)
    p_inverse: float = 0.3
    p_long_instruction: float = 0.5
    #: logit of the input shape in the output (0: re-predict the label map from scratch, the old design)
    shape_prior_logit: float = 4.0
    #: the network also gets, per class, whether the instruction grows or shrinks it (read by the rule the
    #: scope uses) as constant input channels; False: the sentence embedding alone, which a CPU-sized refiner
    #: did not follow (issue #26, docs/COWTALK.md)
    direction_channels: bool = True
    #: weight of a cross-entropy over the voxels the batch's instructions edit (:class:`EditVoxelLoss`),
    #: added to nnU-Net's Dice + CE; 0: nnU-Net's loss alone
    edit_voxel_weight: float = 0.0

    # ------------------------------------------------------------------ setup
    def load_text(self):
        f = text_folder(self.preprocessed_dataset_folder_base) / INSTRUCTIONS_FILE
        if not f.is_file():
            raise FileNotFoundError(f"{f} is missing: run nnUNetv2_text_embed on the CoWTalk dataset")
        self.instructions = json.loads(f.read_text(encoding="utf-8"))
        ct = self.dataset_json["cowtalk"]
        # input channel of each class's shape, keyed by the dataset's contiguous label id
        to_contiguous = original_to_contiguous(self.dataset_json)
        self.shape_channel_of = {contiguous_id(to_contiguous, v): int(ch) for ch, v in ct["shape_channels"].items()}
        self.image_channels = [] if ct.get("no_image") else [int(ct.get("image_channel") or 0)]
        return load_dataset_text(self.preprocessed_dataset_folder_base, self.dataset_json,
                                 extra_texts=all_instruction_texts(self.instructions))

    def network_config_overrides(self) -> dict:
        k = self.label_manager.num_segmentation_heads
        prior = {}
        if self.shape_prior_logit:
            prior = {"shape_prior_channels": tuple(self.shape_channel_of.get(c, -1) for c in range(1, k)),
                     "shape_prior_logit": float(self.shape_prior_logit)}
        return {**self.network_overrides, "outputs_per_prompt": k, **prior,
                "direction_channels": self.direction_channels}

    def _build_loss(self):
        """nnU-Net's loss, its per-scale term wrapped in :class:`EditVoxelLoss` when the edits are weighted."""
        loss = super()._build_loss()
        self.edit_loss = None
        if self.edit_voxel_weight:
            ds = isinstance(loss, DeepSupervisionWrapper)
            self.edit_loss = EditVoxelLoss(loss.loss if ds else loss, self.edit_voxel_weight)
            if ds:
                loss.loss = self.edit_loss
            else:
                loss = self.edit_loss
        return loss

    def get_training_transforms(self, *args, **kwargs):
        """nnU-Net's pipeline with every intensity transform restricted to the image channel."""
        pipeline = nnUNetTrainer.get_training_transforms(*args, **kwargs)
        for i, t in enumerate(pipeline.transforms):
            if isinstance(t, RandomTransform) and is_intensity_transform(t.transform):
                pipeline.transforms[i] = OnlyChannels(t, self.image_channels)
        return pipeline

    # ------------------------------------------------------------------ batches
    def error_action(self, error: dict, training: bool) -> str:
        """What a training sample does with one error: 'drop', 'leave' (uncorrected), 'inverse' or
        'repair' (always 'repair' in validation)."""
        u = np.random.random() if training else 1.0
        if u < self.p_drop_error:
            return "drop"
        if u < self.p_drop_error + self.p_leave_uncorrected:
            return "leave"
        if "inverse" in error and u < self.p_drop_error + self.p_leave_uncorrected + self.p_inverse:
            return "inverse"
        return "repair"

    @staticmethod
    def apply_action(data: torch.Tensor, targets: list, b: int, channel: int, label: int, action: str) -> None:
        """Turn sample ``b``'s pair for one error (its erroneous shape in ``data[b, channel]``, the correct
        one as ``label`` in the targets) into what ``action`` asks, in place: 'drop' shows the correct
        shape, 'leave' makes the targets keep the error, 'inverse' swaps the two (correct shape in,
        erroneous out), 'repair' changes nothing."""
        def target_shows(shape: torch.Tensor) -> None:
            for t in targets:
                s = F.interpolate(shape, size=t.shape[2:], mode="nearest")[0, 0]
                t[b, 0][t[b, 0] == label] = 0
                t[b, 0][(s > 0.5) & (t[b, 0] == 0)] = label

        if action == "leave":
            target_shows(data[b:b + 1, channel:channel + 1])
        elif action in ("drop", "inverse"):
            erroneous = data[b:b + 1, channel:channel + 1].clone() if action == "inverse" else None
            data[b, channel] = (targets[0][b, 0] == label).to(data.dtype)
            if erroneous is not None:
                target_shows(erroneous)

    def prompt_batch(self, batch: dict, data: torch.Tensor, target, training: bool):
        targets = target if isinstance(target, list) else [target]
        shape_ch = sorted(self.shape_channel_of.values())
        data[:, shape_ch] = (data[:, shape_ch] > 0.5).to(data.dtype)
        index = self.text.term_index()
        rows, texts, edited = [], [], []
        for b, key in enumerate(batch["keys"]):
            kept, errors = [], self.instructions[key]
            for e in errors:
                if e["type"] == "none":
                    kept.append(e)
                    continue
                action = self.error_action(e, training)
                self.apply_action(data, targets, b, self.shape_channel_of[e["label"]], e["label"], action)
                if action == "repair":
                    kept.append(e)
                elif action == "inverse":
                    kept.append(inverted(e))
                if action in ("repair", "inverse"):
                    edited.append((b, e["label"]))
            real = [e for e in kept if e["type"] != "none"]
            kind = "long" if training and np.random.random() < self.p_long_instruction else "short"
            text = join_instructions(real, kind) if real or not kept else kept[0][kind]
            rows.append(index[text])
            texts.append(text)
        text = self.term_embeddings[torch.tensor(rows, device=self.device)][:, None]  # (B, 1, dim)
        if self.edit_loss is not None:  # validation scores nnU-Net's loss alone
            self.edit_loss.set_edits(self.edit_masks(data, targets, edited) if training else [])
        if self.text_config.direction_channels:  # per patch here; prediction appends them per tile
            ways = instruction_directions(texts, self.text.vocabulary, self.label_manager.num_segmentation_heads)
            data = append_constant_channels(data, torch.from_numpy(ways))
        return data, text, target, None

    def edit_masks(self, data: torch.Tensor, targets: list, edited: list) -> list:
        """Per target scale, the (B, 1, ...) voxels where an instructed vessel's input shape and its target
        differ: what the instruction asks to change (``edited``: (sample, label) of each asked edit)."""
        masks = []
        for t in targets:
            m = torch.zeros_like(t, dtype=torch.bool)
            for b, label in edited:
                ch = self.shape_channel_of[label]
                shown = F.interpolate(data[b:b + 1, ch:ch + 1], size=t.shape[2:], mode="nearest")[0, 0] > 0.5
                m[b, 0] |= shown != (t[b, 0] == label)
            masks.append(m)
        return masks

    def perform_actual_validation(self, save_probabilities: bool = False):
        """Refine each validation case with its (short) instruction and report per-class Dice."""
        from nnunetv2_text.training.validation import validate_refinement

        validate_refinement(self)


class CoWTalkRefineTrainer_noResidual(CoWTalkRefineTrainer):
    """The label map re-predicted from scratch, without the input shape as a prior (the ablation)."""

    shape_prior_logit = 0.0


class CoWTalkRefineTrainer_5epochs(CoWTalkRefineTrainer):
    epochs = 5


class CoWTalkRefineTrainer_short(CoWTalkRefineTrainer):
    """200 steps: a CPU-sized trial run on the phantom (not a converged model)."""

    epochs = 5
    iterations_per_epoch = 40
    val_iterations_per_epoch = 2


class CoWTalkRefineTrainer_cpu(CoWTalkRefineTrainer):
    """600 steps: what benchmarks/cowtalk_refinement.py trains on a CPU within a session."""

    epochs = 15
    iterations_per_epoch = 40
    val_iterations_per_epoch = 2
