"""A text model met by nnU-Net's own predictor (``nnUNetv2_predict -tr TextFusionTrainer ...``).

nnU-Net's predictor rebuilds the network by calling the trainer class's ``build_network_architecture``
and then feeds it images only; a text model needs prompts, which that command has no way to take. It is
the first command a user tries, so instead of a ``TypeError`` deep in nnU-Net they get the equivalent
``nnUNetv2_text_predict`` command line, built from their own arguments.
"""
from __future__ import annotations

import os
import shlex
import sys
from typing import NoReturn, Optional, Sequence

from nnunetv2_text.errors import UserInputError

#: nnU-Net's prediction commands whose arguments ``nnUNetv2_text_predict`` accepts as they are
NNUNET_PREDICT_COMMANDS = ("nnUNetv2_predict", "nnUNetv2_predict_from_modelfolder")
#: nnU-Net options without a meaning for text models (cascades), dropped with their value
_DROPPED_WITH_VALUE = ("-prev_stage_predictions",)


def equivalent_text_predict_command(argv: Sequence[str], prompts: str = "prompts.txt") -> str:
    """``nnUNetv2_predict ARGS`` -> ``nnUNetv2_text_predict ARGS --prompts prompts.txt`` (a shell line)."""
    out, skip = ["nnUNetv2_text_predict"], False
    for a in argv:
        if skip:
            skip = False
        elif a in _DROPPED_WITH_VALUE:
            skip = True
        else:
            out.append(a)
    return shlex.join(out + ["--prompts", prompts])


def refuse_plain_nnunet_predictor(trainer_name: str, argv: Optional[Sequence[str]] = None) -> NoReturn:
    """Stop with a message naming ``nnUNetv2_text_predict``: on the command line as argparse stops (exit
    code 2, no traceback), from Python as a :class:`UserInputError`."""
    argv = list(sys.argv if argv is None else argv)
    prog = os.path.basename(argv[0]) if argv else ""
    why = (f"{trainer_name} is a text-promptable model; nnU-Net's predictor cannot give it prompts. "
           f"Predict with nnUNetv2_text_predict and a prompt file (one prompt per line)")
    if prog in NNUNET_PREDICT_COMMANDS:
        print(f"{prog}: error: {why}:\n  {equivalent_text_predict_command(argv[1:])}", file=sys.stderr)
        raise SystemExit(2)
    raise UserInputError(f"{why}, or nnunetv2_text.inference.predictor.TextPredictor from Python")
