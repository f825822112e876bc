"""Re-export of the nnunetv2_text trainers for nnU-Net's ``nnUNet_extTrainer`` lookup.

nnU-Net imports the modules of an external trainer folder by file name and unloads them afterwards;
the classes found here live in the installed package, so checkpoints and worker processes can
always import them again. Point nnUNet_extTrainer at this folder: ``eval "$(nnUNetv2_text_env)"``.
"""
from nnunetv2_text.training.trainer import TextFusionTrainer  # noqa: F401
from nnunetv2_text.training.variants import *  # noqa: F401,F403
from nnunetv2_text.training.cowtalk import (CoWTalkRefineTrainer, CoWTalkRefineTrainer_5epochs,  # noqa: F401
                                           CoWTalkRefineTrainer_cpu, CoWTalkRefineTrainer_noResidual,
                                           CoWTalkRefineTrainer_short)
from nnunetv2_text.training.voxtell import TextFusionTrainer_VoxTell  # noqa: F401
