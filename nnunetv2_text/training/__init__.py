"""Training: nnU-Net trainers for text-conditioned networks and their prompt sampling."""
from __future__ import annotations

import os
from pathlib import Path

#: the folder to put on ``nnUNet_extTrainer`` so that ``nnUNetv2_train -tr TextFusionTrainer`` finds it
EXT_TRAINER_FOLDER = str(Path(__file__).resolve().parent / "ext_trainers")


def ensure_ext_trainer_env(environ=os.environ) -> None:
    """Add :data:`EXT_TRAINER_FOLDER` to ``nnUNet_extTrainer`` (used by our own commands and subprocesses)."""
    paths = [p for p in environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    if EXT_TRAINER_FOLDER not in paths:
        environ["nnUNet_extTrainer"] = os.pathsep.join(paths + [EXT_TRAINER_FOLDER])
