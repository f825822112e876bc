"""The demo shows the user it is alive: one line per epoch from nnU-Net's training output."""
from __future__ import annotations

from nnunetv2_text.demo.pipeline import TrainingProgress

NNUNET_EPOCH = """2026-11-25 16:50:01.123456: Epoch 2
2026-11-25 16:50:01.123456: Current learning rate: 0.00289
2026-11-25 16:50:20.100000: train_loss -0.7123
2026-11-25 16:50:20.100000: val_loss -0.6
2026-11-25 16:50:20.100000: Pseudo dice [np.float32(0.9123), np.float32(0.0), np.float64(nan)]
2026-11-25 16:50:20.100000: Epoch time: 19.2 s
2026-11-25 16:50:20.100000: Yayy! New best EMA pseudo Dice: 0.61
"""


def test_one_line_per_epoch_with_pseudo_dice():
    progress = TrainingProgress(16)
    shown = [s for s in map(progress, NNUNET_EPOCH.splitlines(keepends=True)) if s]
    assert shown == ["epoch 3/16: train loss -0.7123, pseudo Dice [0.91, 0.00, nan] (19.2 s)"]


def test_final_validation_lines_are_shown():
    progress = TrainingProgress(16)
    assert progress("2026-11-25 17:00:00.0:   Dice 'ball': 0.9700\n") == "validation: Dice 'ball': 0.9700"
    assert progress("2026-11-25 17:00:00.0: Mean validation Dice: 0.9800\n").endswith("0.9800")
    assert progress("2026-11-25 17:00:00.0: Using device: cpu\n") is None
