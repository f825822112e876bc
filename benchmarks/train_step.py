"""Training step: plain nnU-Net ResEncUNet vs the text network, side by side in one process.

Same arch kwargs (ResEncM at the given patch, or a plans file), same batch, nnU-Net's losses with deep
supervision (Dice+CE for plain, Dice+BCE per prompt for text), SGD as nnU-Net, fp16 autocast on CUDA.
Reports median step time and peak memory for 1, 3 and 6 prompts as ratios to the plain step.

    python benchmarks/train_step.py --device cuda --patch 128 --batch 2 [--compile] [--out results.json]
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import arch_from_plans, device_name, plain_network, text_network, timed  # noqa: E402


def ds_weights(n: int):
    w = np.array([1 / 2 ** i for i in range(n)])
    w[-1] = 0
    return w / w.sum()


def make_step(net, loss, x, target, text, device, compile_net: bool):
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper

    loss = DeepSupervisionWrapper(loss, ds_weights(len(target)))
    opt = torch.optim.SGD(net.parameters(), 1e-2, momentum=0.99, nesterov=True)
    model = torch.compile(net) if compile_net else net
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" else None
    amp = (lambda: torch.autocast("cuda", torch.float16)) if device.type == "cuda" else contextlib.nullcontext

    def step():
        opt.zero_grad(set_to_none=True)
        with amp():
            out = model(x) if text is None else model(x, text)
            l = loss(out, target)
        if scaler is not None:
            scaler.scale(l).backward()
            scaler.step(opt)
            scaler.update()
        else:
            l.backward()
            opt.step()
    return step


def measure(kind: str, arch, args, device, n_prompts: int = 0, design: dict = None) -> dict:
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    from nnunetv2_text.training.loss import prompt_dice_bce_loss

    torch.manual_seed(0)
    patch = [args.patch] * 3
    x = torch.randn(args.batch, 1, *patch, device=device)
    scales = [1] + [2 ** i for i in range(1, arch["n_stages"] - 1)]
    if kind == "plain":
        net = plain_network(arch).to(device)
        target = [torch.randint(0, 2, (args.batch, 1, *[p // s for p in patch]), device=device).float()
                  for s in scales]
        loss = DC_and_CE_loss({"batch_dice": False, "smooth": 1e-5, "do_bg": False}, {}, weight_ce=1, weight_dice=1,
                              dice_class=MemoryEfficientSoftDiceLoss)
        text = None
    else:
        net = text_network(arch, **(design or {})).to(device)
        target = [torch.randint(0, 2, (args.batch, n_prompts, *[p // s for p in patch]), device=device).float()
                  for s in scales]
        loss = prompt_dice_bce_loss()  # the text trainer's own loss
        text = torch.randn(args.batch, n_prompts, 384, device=device)
    step = make_step(net, loss, x, target, text, device, args.compile)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t = timed(step, device, args.warmup, args.reps)
    mem = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else float("nan")
    del net, step
    return {"kind": kind, "design": design or {}, "prompts": n_prompts, "seconds": t, "peak_gib": mem}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--prompts", type=int, nargs="+", default=[1, 3, 6])
    p.add_argument("--plans", default=None, help="plans json (default: ResEncM arch kwargs for --patch)")
    p.add_argument("--compile", action="store_true", help="torch.compile both networks")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--designs", nargs="+", default=["{}"],
                   help='text network overrides as JSON, one per design, e.g. \'{}\' \'{"light_stages": 2}\'')
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    arch = arch_from_plans(args.plans, [args.patch] * 3)
    rows = [measure("plain", arch, args, device)]
    rows += [measure("text", arch, args, device, n, json.loads(d)) for d in args.designs for n in args.prompts]
    base = rows[0]
    for r in rows:
        r["time_ratio"] = r["seconds"] / base["seconds"]
        r["mem_ratio"] = r["peak_gib"] / base["peak_gib"] if device.type == "cuda" else None
    result = {"benchmark": "train_step", "device": device_name(device), "date": datetime.date.today().isoformat(),
              "torch": torch.__version__, "patch": args.patch, "batch": args.batch, "compile": args.compile,
              "stages": arch["n_stages"], "rows": rows}
    print(f"{'network':<44}{'s/step':>9}{'x plain':>9}{'GiB':>8}{'x plain':>9}")
    for r in rows:
        name = "plain nnU-Net" if r["kind"] == "plain" else f"text {json.dumps(r['design'])}, {r['prompts']} pr."
        mr = f"{r['mem_ratio']:.2f}" if r["mem_ratio"] is not None else "-"
        print(f"{name:<44}{r['seconds']:>9.4f}{r['time_ratio']:>9.2f}{r['peak_gib']:>8.2f}{mr:>9}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
