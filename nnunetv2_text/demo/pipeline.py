"""The demo pipeline: every step is the real nnU-Net / nnunetv2_text command, run as a subprocess.

toy dataset -> ``nnUNetv2_plan_and_preprocess -pl nnUNetPlannerResEncM`` -> narrower copy of the plans
(CPU speed) -> ``nnUNetv2_text_embed`` -> ``nnUNetv2_train -tr TextFusionTrainer_demo`` ->
``nnUNetv2_text_predict --prompts --save_overlays`` -> per-prompt Dice against the held-out labels (and a
picture of every held-out case, :func:`overlay_folder`).
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from nnunetv2_text.demo.toy import TRAIN_CASES, write_toy_dataset
from nnunetv2_text.evaluation.metrics import dice
from nnunetv2_text.text.vocabulary import load_vocabulary, resolve_vocabulary_path
from nnunetv2_text.training import ensure_ext_trainer_env
from nnunetv2_text.utils.io import atomic_write_json

logger = logging.getLogger(__name__)

DEMO_DATASET_ID = 990
DEMO_PLANS = "nnUNetResEncUNetDemoPlans"
#: the demo's prediction folder, inside its work folder
PREDICTIONS = "predictions"
DEMO_PROMPTS = ["ball", "round blob", "box", "cube", "rod", "cylinder", "all shapes"]


def command(name: str) -> str:
    """A console script of this environment (next to the running interpreter), else from PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


class TrainingProgress:
    """Turns nnU-Net's training output into one line per epoch (and the final validation's lines), so a
    user watching the demo sees it is alive; the full output still goes to the log file."""

    _NUMBER = re.compile(r"(?<![\w.])(-?\d+(?:\.\d+)?|nan)")

    def __init__(self, num_epochs: int):
        self.num_epochs = num_epochs
        self.epoch, self.loss, self.dice = None, None, None

    def __call__(self, line: str) -> Optional[str]:
        text = line.split(": ", 1)[1].strip() if ": " in line[:40] else line.strip()  # drop the timestamp
        if text.startswith("Epoch ") and text[6:].isdigit():
            self.epoch, self.loss, self.dice = int(text[6:]), None, None
        elif text.startswith("train_loss"):
            self.loss = text.split()[-1]
        elif text.startswith("Pseudo dice"):
            self.dice = ", ".join(f"{float(v):.2f}" for v in self._NUMBER.findall(text[len("Pseudo dice"):]))
        elif text.startswith("Epoch time") and self.epoch is not None:
            return (f"epoch {self.epoch + 1}/{self.num_epochs}: train loss {self.loss}, pseudo Dice [{self.dice}] "
                    f"({text.split(':', 1)[1].strip()})")
        elif text.startswith(("Dice '", "Mean validation Dice")):
            return f"validation: {text}"
        return None


def run(cmd: List[str], env: dict, log_file: Optional[Path] = None,
        progress: Optional[Callable[[str], Optional[str]]] = None) -> None:
    """Run one command, its output appended to ``log_file``; ``progress`` picks lines worth showing."""
    logger.info("$ %s", " ".join(cmd))
    with open(log_file, "a") if log_file else open(os.devnull, "w") as log, \
            subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             bufsize=1) as proc:
        for line in proc.stdout:
            log.write(line)
            shown = progress(line) if progress else None
            if shown:
                logger.info("  %s", shown)
    if proc.returncode != 0:
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}; see {log_file}")


def nnunet_env(workdir: Path) -> dict:
    env = dict(os.environ)
    env.update(nnUNet_raw=str(workdir / "nnUNet_raw"), nnUNet_preprocessed=str(workdir / "nnUNet_preprocessed"),
               nnUNet_results=str(workdir / "nnUNet_results"), nnUNet_compile=env.get("nnUNet_compile", "f"),
               nnUNet_n_proc_DA=env.get("nnUNet_n_proc_DA", "1"), HF_HUB_OFFLINE="1",
               PYTHONUNBUFFERED="1")  # progress lines arrive as they are printed, not in 8 KiB bursts
    ensure_ext_trainer_env(env)
    return env


def derive_plans(preprocessed_dataset: Path, source: str, target: str, features: Sequence[int],
                 blocks: Sequence[int], batch_size: int) -> Path:
    """Copy planned plans under a new name with other widths/blocks/batch: same preprocessed data,
    same stages, strides, kernels and patch size, as the planner chose them."""
    plans = json.loads((preprocessed_dataset / f"{source}.json").read_text())
    plans["plans_name"] = target
    cfg = plans["configurations"]["3d_fullres"]
    arch = cfg["architecture"]["arch_kwargs"]
    n = arch["n_stages"]
    arch["features_per_stage"] = list(features)[:n] + [features[-1]] * max(0, n - len(features))
    arch["n_blocks_per_stage"] = list(blocks)[:n] + [blocks[-1]] * max(0, n - len(blocks))
    cfg["batch_size"] = batch_size
    out = preprocessed_dataset / f"{target}.json"
    atomic_write_json(out, plans)
    return out


def dice_table(pred_folder: Path, labels_folder: Path, vocab_name: str) -> List[Dict]:
    manifest = json.loads((pred_folder / "manifest.json").read_text())
    vocab = load_vocabulary(resolve_vocabulary_path(vocab_name))
    rows = []
    for case, prompts in sorted(manifest["cases"].items()):
        ref = sitk.GetArrayFromImage(sitk.ReadImage(str(labels_folder / f"{case}.nii.gz")))
        for prompt, rec in prompts.items():
            pred = sitk.GetArrayFromImage(sitk.ReadImage(str(pred_folder / rec["file"]))) > 0
            concept = vocab.lookup(prompt)
            gt = np.isin(ref, concept.labels) if concept else np.zeros_like(pred)
            rows.append({"case": case, "prompt": prompt, "concept": concept.id if concept else None,
                         "present": bool(gt.any()), "pred_voxels": int(pred.sum()), "dice": dice(pred, gt)})
    return rows


def overlay_folder(workdir: Path) -> Path:
    """Where the demo's overlay pictures are (``overlays/<case>.png`` of its predictions)."""
    from nnunetv2_text.evaluation.overlays import OVERLAYS

    return Path(workdir).resolve() / PREDICTIONS / OVERLAYS


def run_demo(workdir: Path, device: str = "cpu") -> List[Dict]:
    workdir = Path(workdir).resolve()
    env = nnunet_env(workdir)
    log = workdir / "demo.log"
    workdir.mkdir(parents=True, exist_ok=True)
    logger.info("full output of every step: %s", log)
    raw = write_toy_dataset(Path(env["nnUNet_raw"]), DEMO_DATASET_ID, num_cases=TRAIN_CASES, num_test=3, seed=0)
    did = str(DEMO_DATASET_ID)
    run([command("nnUNetv2_plan_and_preprocess"), "-d", did, "-pl", "nnUNetPlannerResEncM", "-c", "3d_fullres",
         "-np", "2"], env, log)
    pre = Path(env["nnUNet_preprocessed"]) / raw.name
    derive_plans(pre, "nnUNetResEncUNetMPlans", DEMO_PLANS, features=(8, 16, 32, 64), blocks=(1, 1, 2, 2),
                 batch_size=4)
    run([command("nnUNetv2_text_embed"), "-d", did], env, log)
    from nnunetv2_text.training.variants import TextFusionTrainer_demo

    run([command("nnUNetv2_train"), did, "3d_fullres", "0", "-tr", "TextFusionTrainer_demo", "-p", DEMO_PLANS,
         "-device", device], env, log, progress=TrainingProgress(TextFusionTrainer_demo.epochs))
    prompts = workdir / "prompts.txt"
    prompts.write_text("\n".join(DEMO_PROMPTS) + "\n", encoding="utf-8")
    pred = workdir / PREDICTIONS
    run([command("nnUNetv2_text_predict"), "-i", str(raw / "imagesTs"), "-o", str(pred), "--prompts", str(prompts),
         "-d", did, "-c", "3d_fullres", "-f", "0", "-tr", "TextFusionTrainer_demo", "-p", DEMO_PLANS,
         "-device", device, "-npp", "1", "-nps", "1", "--save_overlays"], env, log)
    return dice_table(pred, raw / "labelsTs", "toy_shapes")
