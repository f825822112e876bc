"""``nnUNetv2_text_env``: prints the shell line that lets nnU-Net find this package's trainers.

Usage: ``eval "$(nnUNetv2_text_env)"`` (or add its output to your job script / shell profile).
"""
import os
import shlex

from nnunetv2_text.training import ensure_ext_trainer_env


def main() -> None:
    env = {"nnUNet_extTrainer": os.environ.get("nnUNet_extTrainer", "")}
    ensure_ext_trainer_env(env)
    print(f"export nnUNet_extTrainer={shlex.quote(env['nnUNet_extTrainer'])}")


if __name__ == "__main__":
    main()
