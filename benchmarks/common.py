"""Shared pieces of the benchmarks: ResEnc arch kwargs as nnU-Net's ResEncM planner writes them, the
plain nnU-Net network built by nnU-Net itself, and the text network built by our one builder."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

REQ = ["conv_op", "norm_op", "dropout_op", "nonlin"]
#: the benchmarks' own trainers (ablations and schedules users do not choose), kept out of the product
EXT_TRAINERS = Path(__file__).resolve().parent / "ext_trainers"
#: where the benchmarks write their tables: one file per benchmark, the latest run of each
RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"


def benchmark_env(work: Path) -> dict:
    """nnU-Net's environment for a benchmark working in ``work``: the product's trainers and the
    benchmarks' own on nnUNet_extTrainer."""
    from nnunetv2_text.demo.pipeline import nnunet_env

    env = nnunet_env(work)
    env["nnUNet_extTrainer"] = os.pathsep.join([env["nnUNet_extTrainer"], str(EXT_TRAINERS)])
    return env


def resenc_m_arch(patch: Sequence[int]) -> dict:
    """ResEncM arch kwargs for an isotropic patch (6 stages at 128^3, fewer for small patches)."""
    n = 6
    while n > 2 and min(patch) // 2 ** (n - 1) < 4:
        n -= 1
    features = [min(32 * 2 ** i, 320) for i in range(n)]
    return {"n_stages": n, "features_per_stage": features, "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[3, 3, 3]] * n, "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
            "n_blocks_per_stage": [1, 3, 4, 6, 6, 6][:n], "n_conv_per_stage_decoder": [1] * (n - 1),
            "conv_bias": True, "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}


def arch_from_plans(plans_file: Optional[str], patch: Sequence[int]) -> dict:
    if plans_file is None:
        return resenc_m_arch(patch)
    plans = json.loads(Path(plans_file).read_text())
    return plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]


def plain_network(arch: dict, in_ch: int = 1, num_classes: int = 2, ds: bool = True):
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    return get_network_from_plans("dynamic_network_architectures.architectures.unet.ResidualEncoderUNet", arch,
                                  REQ, in_ch, num_classes, allow_init=True, deep_supervision=ds)


def text_network(arch: dict, in_ch: int = 1, text_dim: int = 384, ds: bool = True, **overrides):
    from nnunetv2_text.network import TextNetworkConfig, build_text_network

    return build_text_network(arch, REQ, in_ch, TextNetworkConfig(text_dim=text_dim, **overrides), ds)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, warmup: int, reps: int) -> float:
    """Median seconds per call after warm-up (compile happens during warm-up)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def pipeline_parser(doc: str, trainer: str, subjects: int, test: int, out: str) -> argparse.ArgumentParser:
    """The options shared by the whole-pipeline benchmarks (dataset -> plan -> train -> predict -> report)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True)
    p.add_argument("--trainer", default=trainer)
    p.add_argument("--device", default="cuda")
    p.add_argument("--subjects", type=int, default=subjects)
    p.add_argument("--test", type=int, default=test)
    p.add_argument("--small", action="store_true", help="narrow the planned widths (CPU runs)")
    p.add_argument("--out", default=out)
    return p


def toy_or_mni_parser(doc: str, results_file: str,
                      workdir_help: str = "working folder (datasets, models, predictions)") -> argparse.ArgumentParser:
    """The options of the benchmarks that run on the toy or the MNI152 dataset (robustness, orientation,
    light decoder); each adds its own."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=("toy", "mni152"), default="toy")
    p.add_argument("--workdir", required=True, help=workdir_help)
    p.add_argument("--device", default="cuda")
    p.add_argument("--test", type=int, default=8, help="held-out cases (when the dataset is made here)")
    p.add_argument("--spacing", type=float, default=6.0, help="MNI152 spacing in mm")
    p.add_argument("--out", default=str(RESULTS / results_file))
    return p


def plan_resenc_m(dataset_id: int, raw: Path, env: dict, log: Path, small: bool) -> str:
    """nnUNetv2_plan_and_preprocess with the ResEncM planner; with ``small`` a narrower copy of its plans
    (same stages and patch) for CPU runs. Returns the plans name to train with."""
    from nnunetv2_text.demo.pipeline import command, derive_plans, run

    run([command("nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-pl", "nnUNetPlannerResEncM", "-c",
         "3d_fullres", "-np", "2"], env, log)
    if not small:
        return "nnUNetResEncUNetMPlans"
    derive_plans(Path(env["nnUNet_preprocessed"]) / raw.name, "nnUNetResEncUNetMPlans", "nnUNetResEncUNetSmallPlans",
                 features=(16, 32, 64, 128), blocks=(1, 2, 2, 2), batch_size=2)
    return "nnUNetResEncUNetSmallPlans"


def write_section(out: Path, key: str, text: str) -> None:
    """Replace the ``<!-- key -->`` ... ``<!-- /key -->`` section of a results file (or append it), leaving
    everything else in the file as it is. ``text`` must carry both markers."""
    old = out.read_text(encoding="utf-8") if out.is_file() else ""
    start, end = f"<!-- {key} -->", f"<!-- /{key} -->"
    if start in old and end in old:
        new = old[:old.index(start)] + text + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    out.write_text(new, encoding="utf-8")


def git_commit() -> str:
    """The checkout a benchmark ran from, for its table's header ('+local changes' where it differs)."""
    try:
        here = Path(__file__).resolve().parent
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("+local changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
