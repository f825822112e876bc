"""``nnUNetv2_train -num_gpus N`` needs every trainer variant to survive DistributedDataParallel without
``find_unused_parameters``: every trainable parameter must get a gradient in every step, on every rank.

No GPU is needed to check that. Two processes join a gloo group; in each, the real trainer is built and
initialised by nnU-Net (which wraps the network in DDP, as for ``-num_gpus 2``), then runs real train
steps on batches from nnU-Net's data loader. After each step the gradients must agree across ranks (DDP
averaged them) and no trainable parameter may lack one. A parameter left out of the graph makes DDP
raise at the next step, so several steps are run.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from conftest import COWTALK_ID, COWTALK_PLANS, DATASET_ID, TINY_PLANS

STEPS = 3
#: (trainer class, dataset id, plans) for every trainer variant whose network or loss differs
VARIANTS = [
    ("TextFusionTrainer", DATASET_ID, TINY_PLANS),
    ("TextFusionTrainer_noDS", DATASET_ID, TINY_PLANS),
    ("TextFusionTrainer_lateFusion", DATASET_ID, TINY_PLANS),
    ("TextFusionTrainer_demo", DATASET_ID, TINY_PLANS),
    ("TextFusionTrainer_noForeign", DATASET_ID, TINY_PLANS),
    ("TextFusionTrainer_emptyLoss", DATASET_ID, TINY_PLANS),
    ("TextFusionTrainer_light", DATASET_ID, TINY_PLANS),
    ("TextFusionTrainer_everyStage", DATASET_ID, TINY_PLANS),
    ("CoWTalkRefineTrainer", COWTALK_ID, COWTALK_PLANS),
]


def _cpu_ddp(module, device_ids=None, **kwargs):
    # nnU-Net passes device_ids=[local_rank], which DDP only accepts for CUDA modules; everything else
    # (find_unused_parameters=False, bucketing, buffer broadcast) is what -num_gpus gets
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, find_unused_parameters=False)


def _flat_grads(network) -> torch.Tensor:
    parts = []
    for name, p in network.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"trainable parameter {name} got no gradient"
            parts.append(p.grad.detach().flatten())
    return torch.cat(parts)


def _worker(rank: int, world: int, store: str, results: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    from nnunetv2.run.run_training import get_trainer_from_args
    from nnunetv2.training.nnUNetTrainer import nnUNetTrainer as trainer_module

    trainer_module.DDP = _cpu_ddp
    report = {}
    for name, dataset_id, plans_name in VARIANTS:
        torch.manual_seed(rank)  # different batches per rank, as with real DDP samplers
        # what nnUNetv2_train -num_gpus does in each rank (nnunetv2.run.run_training.run_ddp)
        trainer = get_trainer_from_args(str(dataset_id), "3d_fullres", 0, name, plans_name, False, torch.device("cpu"))
        trainer.device, trainer.grad_scaler = torch.device("cpu"), None  # nnU-Net assumes CUDA under DDP
        trainer.initialize()
        assert trainer.is_ddp and isinstance(trainer.network, torch.nn.parallel.DistributedDataParallel)
        train_loader, _ = trainer.get_dataloaders()
        diffs, losses = [], []
        for _ in range(STEPS):
            batch = next(train_loader)
            losses.append(float(trainer.train_step(batch)["loss"]))
            grads = _flat_grads(trainer.network.module)
            gathered = [torch.empty_like(grads) for _ in range(world)]
            dist.all_gather(gathered, grads)
            diffs.append(float((gathered[0] - gathered[1]).abs().max() / gathered[0].abs().max().clamp_min(1e-12)))
        params = torch.cat([p.detach().flatten() for p in trainer.network.module.parameters()])
        gathered = [torch.empty_like(params) for _ in range(world)]
        dist.all_gather(gathered, params)
        report[name] = {"grad_rel_diff": diffs, "param_max_diff": float((gathered[0] - gathered[1]).abs().max()),
                        "losses": losses, "keys": list(batch["keys"])}
    Path(results, f"rank{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


def test_every_trainer_variant_trains_under_ddp(toy_dataset, cowtalk_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")  # nnU-Net's single-threaded loader inside each rank
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))  # logs of these runs stay out of the way
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert set(ranks[0]) == {v[0] for v in VARIANTS}
    for name in ranks[0]:
        r0, r1 = ranks[0][name], ranks[1][name]
        assert max(r0["grad_rel_diff"]) < 1e-5, (name, r0["grad_rel_diff"])
        assert r0["param_max_diff"] < 1e-6, (name, r0["param_max_diff"])
        # the ranks saw their own data (otherwise agreeing gradients would prove nothing)
        assert r0["losses"] != r1["losses"] or r0["keys"] != r1["keys"], name
