"""Per-case prediction time: prompts batched (encoder once per tile) vs a whole sliding window per prompt
(encoder re-run every time; VoxTell instead encodes once and loops its decoder), and 1 prompt vs plain
nnU-Net prediction of the same case — all through nnU-Net's sliding window,
side by side in one process.

    python benchmarks/predict_prompts.py --device cuda --patch 128 --image 160 [--out results.json]
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import arch_from_plans, device_name, plain_network, text_network, timed  # noqa: E402


class _Plans:
    """The few plans facts nnU-Net's sliding window reads (patch size)."""

    def __init__(self, patch):
        self.patch_size = list(patch)


def make_predictors(arch, patch, device, prompt_batch, design: dict = None, plain_classes: int = 2):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunetv2_text.inference.predictor import TextPredictor, _PromptHeads

    plain = nnUNetPredictor(tile_step_size=0.5, use_mirroring=False, device=device, allow_tqdm=False)
    plain.network = plain_network(arch, num_classes=plain_classes, ds=False).to(device).eval()
    plain.configuration_manager = _Plans(patch)
    plain.label_manager = _PromptHeads(plain_classes)
    plain.list_of_parameters = [plain.network.state_dict()]

    text = TextPredictor(tile_step_size=0.5, use_mirroring=False, device=device, allow_tqdm=False,
                         prompt_batch_size=prompt_batch)
    text.network = text_network(arch, ds=False, **(design or {})).to(device).eval()
    text.configuration_manager = _Plans(patch)
    text.text_entry = {"network_config": text.network.config.to_dict()}
    text.list_of_parameters = [text.network.state_dict()]
    return plain, text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--patch", type=int, nargs="+", default=[128], help="patch: one size (cubic) or Z Y X")
    p.add_argument("--image", type=int, default=160, help="isotropic image size in voxels")
    p.add_argument("--case", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                   help="a whole case of this size instead of --image's cube (e.g. 200 256 256)")
    p.add_argument("--prompts", type=int, nargs="+", default=[1, 10, 30])
    p.add_argument("--prompt_batch", type=int, default=0, help="prompts per chunk (0: measured, the default)")
    p.add_argument("--plans", default=None)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--designs", nargs="+", default=["{}"],
                   help='text network overrides as JSON, one per design, e.g. \'{}\' \'{"light_stages": 2}\'')
    p.add_argument("--no_loop", action="store_true", help="skip the one-prompt-at-a-time sliding windows")
    p.add_argument("--plain_classes", type=int, default=2,
                   help="plain nnU-Net's outputs (background included): the labels it answers in one pass")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    patch = args.patch * 3 if len(args.patch) == 1 else args.patch
    arch = arch_from_plans(args.plans, patch)
    shape = tuple(args.case) if args.case else (args.image,) * 3
    image = torch.randn(1, *shape)
    rows = []
    for d in args.designs:
        design = json.loads(d)
        plain, text = make_predictors(arch, patch, device, args.prompt_batch, design, args.plain_classes)
        if not rows:
            rows.append({"mode": "plain nnU-Net", "design": None, "prompts": 0, "seconds": timed(
                lambda: plain.predict_sliding_window_return_logits(image), device, 1, args.reps)})
        for n in args.prompts:
            emb = np.random.default_rng(n).standard_normal((n, 384)).astype(np.float32)

            def batched():
                text.set_prompts(emb)
                return text.predict_sliding_window_return_logits(image)

            def loop():  # one prompt at a time: a full sliding window per prompt
                for i in range(n):
                    text.set_prompts(emb[i:i + 1])
                    text.predict_sliding_window_return_logits(image)

            rows.append({"mode": "batched", "design": design, "prompts": n,
                         "seconds": timed(batched, device, 1, args.reps)})
            if not args.no_loop:
                rows.append({"mode": "loop", "design": design, "prompts": n,
                             "seconds": timed(loop, device, 0 if n > 1 else 1, max(1, args.reps // 2))})
    for r in rows:
        one = next((q["seconds"] for q in rows if q["mode"] == "batched" and q["design"] == r["design"]
                    and q["prompts"] == min(args.prompts)), None)
        r["x_one_prompt"] = r["seconds"] / one if one else None
        r["x_plain"] = r["seconds"] / rows[0]["seconds"]
    result = {"benchmark": "predict_prompts", "device": device_name(device),
              "date": datetime.date.today().isoformat(), "torch": torch.__version__, "patch": patch,
              "image": list(shape), "prompt_batch": args.prompt_batch, "plain_classes": args.plain_classes,
              "rows": rows}
    print(f"{'mode':<15}{'design':<28}{'prompts':>8}{'s/case':>9}{'x 1 prompt':>11}{'x plain':>9}")
    for r in rows:
        x1 = f"{r['x_one_prompt']:.2f}" if r["x_one_prompt"] is not None else "-"
        print(f"{r['mode']:<15}{json.dumps(r['design']):<28}{r['prompts']:>8}{r['seconds']:>9.3f}{x1:>11}"
              f"{r['x_plain']:>9.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
