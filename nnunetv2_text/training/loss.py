"""The per-prompt loss: nnU-Net's Dice + BCE, plus an optional term that teaches empty answers.

Why the extra term: a prompt whose target is empty (an absent structure, a foreign prompt) gets almost no
gradient from soft Dice. Its Dice is ``smooth / (sum(p) + smooth)``; with nnU-Net's smooth of 1e-5 that is
~0 for any visible prediction, and its slope ``smooth / (sum(p) + smooth)^2`` vanishes. Only BCE, averaged
over every voxel of the patch, says "not here", while the positives' Dice says "predict" strongly. The
toy's foreign prompts came back as the rod with presence 0.998 (docs/RESULTS.md).

``EmptyTargetLoss`` scores an empty-target (sample, prompt) by ``sum(p) / (sum(p) + t)``, ``t`` being
``tolerance`` times the patch's voxels: 0 for an empty answer, 1/2 for an answer of ``t`` voxels. Its slope
``t / (sum(p) + t)^2`` is largest for small answers, which it pushes to nothing; early in training, when
every prompt answers with half the patch, it is flat and leaves the positives' Dice to lead. Like every loss
on probabilities it adds little to a confident (saturated) false answer: at weight 1, 13x the gradient of
Dice + BCE on a 512-voxel false answer at logit 0, 1.1x at logit 5. The unbounded ``log(1 + sum(p) / t)``
was tried first: it dominated the first epochs, and the toy's rod stayed at pseudo Dice 0 in 9 of the
first 10 epochs (docs/RESULTS.md). The term is averaged over all (sample, prompt) slots, like the Dice
term it complements.
"""
from __future__ import annotations

import math

import torch
from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from torch import nn


def prompt_dice_bce_loss(ddp: bool = False) -> DC_and_BCE_loss:
    """nnU-Net's Dice + BCE per (sample, prompt): prompt slots hold different concepts in every batch, so
    no batch Dice, and every slot (``do_bg``) is a foreground question."""
    return DC_and_BCE_loss({}, {"batch_dice": False, "do_bg": True, "smooth": 1e-5, "ddp": ddp},
                           use_ignore_label=False, dice_class=MemoryEfficientSoftDiceLoss)


class EmptyTargetLoss(nn.Module):
    def __init__(self, base: nn.Module, tolerance: float, weight: float = 1.0):
        super().__init__()
        if not 0 < tolerance < 1:
            raise ValueError(f"empty-target tolerance must be a fraction of the patch in (0, 1), got {tolerance}")
        self.base, self.tolerance, self.weight = base, tolerance, weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits and target (B, N, *spatial), target binary per prompt."""
        axes = tuple(range(2, logits.ndim))
        voxels = math.prod(logits.shape[2:])
        with torch.no_grad():
            empty = target.sum(axes) == 0
        volume = torch.sigmoid(logits.float()).sum(axes)
        t = self.tolerance * voxels
        term = torch.where(empty, volume / (volume + t), torch.zeros_like(volume)).mean()
        return self.base(logits, target) + self.weight * term


class EditVoxelLoss(nn.Module):
    """nnU-Net's multi-class loss plus cross-entropy averaged over the voxels an instruction edits.

    Why: a refiner's edit is a few dozen voxels of a case (a thickened or shortened vessel), while its
    Dice + CE is averaged over the whole patch, most of which the input shape already answers. The verb
    decides only those voxels, so their share of the loss is what teaches the network to read it (issue
    #26). ``edits`` holds, per target shape (one per deep-supervision scale), the batch's (B, 1, ...) edit
    mask; the trainer sets it for each training batch and clears it for validation, so an unset mask
    leaves nnU-Net's loss exactly as it is.
    """

    def __init__(self, base: nn.Module, weight: float):
        super().__init__()
        if weight <= 0:
            raise ValueError(f"the edit-voxel weight must be positive, got {weight}")
        self.base, self.weight = base, weight
        self.edits: dict = {}

    def set_edits(self, masks) -> None:
        """The batch's edit masks, one (B, 1, ...) bool tensor per scale (an empty list clears them)."""
        self.edits = {tuple(m.shape[2:]): m for m in masks}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.base(logits, target)
        edit = self.edits.get(tuple(target.shape[2:]))
        if edit is None or not bool(edit.any()):
            return loss
        ce = nn.functional.cross_entropy(logits.float(), target[:, 0].long(), reduction="none")
        return loss + self.weight * ce[edit[:, 0]].mean()
