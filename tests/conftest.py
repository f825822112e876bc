"""Shared fixtures: one toy dataset planned, embedded and trained ONCE per test session, through the real
nnU-Net and nnunetv2_text commands (subprocesses), on the CPU.

The trained model is small on purpose (a narrower copy of the ResEncM plans: same stages, strides and
patch size as the planner chose, fewer channels) so the whole suite fits CI's budget on 2 cores.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dataset_conversion.cowtalk.phantom import write_phantom_topcow
from nnunetv2_text.demo.pipeline import derive_plans
from nnunetv2_text.demo.toy import TRAIN_CASES, write_toy_dataset
from nnunetv2_text.training import ensure_ext_trainer_env

TESTS = Path(__file__).resolve().parent
DATASET_ID = 991
TINY_PLANS = "nnUNetResEncUNetTinyPlans"
LEARN_TRAINER = "TextFusionTrainer_demo"  # the demo's schedule: the tests train what users run
#: test images: anisotropic spacing and a non-identity direction (rotation by 90 degrees about z)
TEST_SPACING = (1.2, 1.0, 0.9)
TEST_DIRECTION = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
COWTALK_ID = 992
COWTALK_PLANS = "nnUNetResEncUNetTinyPlans"
#: the first two held-out cases (numbered after the training cases) hold all three shapes; the third has no rod
CASE_A, CASE_B = (f"toy_{TRAIN_CASES + k:03d}" for k in range(2))


#: session fixtures that plan, embed or train through the real commands: a test using one is ``slow``
SLOW_FIXTURES = {"toy_dataset", "trained_model", "predictions", "cowtalk_dataset", "cowtalk_model",
                 "every_stage_model"}


def pytest_collection_modifyitems(config, items):
    """Mark every test that needs a planned or trained model as ``slow`` (registered in pytest.ini), so
    ``pytest -m "not slow"`` is a quick check; CI and the README's command run everything."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def cli(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def run_cli(args, env=None, check=True, timeout=1800) -> subprocess.CompletedProcess:
    res = subprocess.run(args, env=env or os.environ.copy(), capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({res.returncode}):\n"
                             f"{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res


@pytest.fixture(scope="session")
def nnunet_env(tmp_path_factory) -> dict:
    """nnU-Net folders in a temporary directory; set for this process and passed to subprocesses."""
    root = tmp_path_factory.mktemp("nnunet")
    env = {"nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "preprocessed"),
           "nnUNet_results": str(root / "results"), "nnUNet_compile": "f", "nnUNet_n_proc_DA": "1",
           "nnUNet_def_n_proc": "2", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "nnUNet_extTrainer": str(TESTS / "ext_trainers")}
    ensure_ext_trainer_env(env)
    os.environ.update(env)
    return dict(os.environ)


@pytest.fixture(scope="session")
def toy_dataset(nnunet_env) -> dict:
    """Raw toy dataset -> nnUNetv2_plan_and_preprocess (ResEncM) -> tiny plans -> nnUNetv2_text_embed."""
    raw = write_toy_dataset(Path(nnunet_env["nnUNet_raw"]), DATASET_ID, num_cases=TRAIN_CASES, num_test=3, seed=1,
                            test_spacing=TEST_SPACING, test_direction=TEST_DIRECTION)
    run_cli([cli("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-pl", "nnUNetPlannerResEncM",
             "-c", "3d_fullres", "-np", "2"], nnunet_env)
    pre = Path(nnunet_env["nnUNet_preprocessed"]) / raw.name
    derive_plans(pre, "nnUNetResEncUNetMPlans", TINY_PLANS, features=(8, 16, 32, 64), blocks=(1, 1, 2, 2),
                 batch_size=4)
    run_cli([cli("nnUNetv2_text_embed"), "-d", str(DATASET_ID)], nnunet_env)
    return {"raw": raw, "preprocessed": pre, "name": raw.name, "id": DATASET_ID}


@pytest.fixture(scope="session")
def trained_model(toy_dataset, nnunet_env) -> dict:
    """nnUNetv2_train -tr TextFusionTrainer_demo (the demo's schedule), with the text encoder made unimportable.

    ``tests/poison`` shadows sentence_transformers, transformers' model loading entry and the bundled
    MiniLM package with modules that raise on import: training succeeding proves it reads only the
    embedding cache.
    """
    env = dict(nnunet_env)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS / "poison")] + [p for p in env.get("PYTHONPATH", "").split(
        os.pathsep) if p])
    res = run_cli([cli("nnUNetv2_train"), str(DATASET_ID), "3d_fullres", "0", "-tr", LEARN_TRAINER, "-p",
                   TINY_PLANS, "-device", "cpu"], env)
    folder = Path(nnunet_env["nnUNet_results"]) / toy_dataset["name"] / f"{LEARN_TRAINER}__{TINY_PLANS}__3d_fullres"
    return {"folder": folder, "trainer": LEARN_TRAINER, "plans": TINY_PLANS, "log": res.stdout}


@pytest.fixture(scope="session")
def every_stage_model(trained_model, tmp_path_factory) -> dict:
    """The trained model's folder with a checkpoint of every decoder stage per prompt (the design before the
    shared decoder, ``shared_decoder: false``; seeded random weights, the trained text centre): old
    checkpoints and prompt chunking, which only this design uses, are tested on it."""
    import shutil

    import torch

    from nnunetv2_text.network import TextNetworkConfig, build_text_network

    folder = tmp_path_factory.mktemp("every_stage") / "model"
    shutil.copytree(trained_model["folder"], folder)
    ckpt = torch.load(folder / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    config = TextNetworkConfig.from_dict({**ckpt["text"]["network_config"], "shared_decoder": False})
    arch = json.loads((folder / "plans.json").read_text())["configurations"]["3d_fullres"]["architecture"]
    torch.manual_seed(0)
    weights = build_text_network(arch["arch_kwargs"], arch["_kw_requires_import"], 1, config).state_dict()
    weights["prompt_decoder.text_center"] = ckpt["network_weights"]["prompt_decoder.text_center"]
    ckpt["network_weights"], ckpt["text"]["network_config"] = weights, config.to_dict()
    torch.save(ckpt, folder / "fold_0" / "checkpoint_final.pth")
    return {"folder": folder, "checkpoint": ckpt}


def predict_args(toy_dataset, trained_model, inp, out, prompts, *extra) -> list:
    return [cli("nnUNetv2_text_predict"), "-i", str(inp), "-o", str(out), "--prompts", str(prompts),
            "-d", str(toy_dataset["id"]), "-c", "3d_fullres", "-f", "0", "-tr", trained_model["trainer"],
            "-p", trained_model["plans"], "-device", "cpu", "-npp", "1", "-nps", "1", *extra]


@pytest.fixture(scope="session")
def predictions(toy_dataset, trained_model, nnunet_env, tmp_path_factory) -> dict:
    """The held-out cases predicted once through nnUNetv2_text_predict."""
    out = tmp_path_factory.mktemp("pred")
    prompts = out.parent / "prompts.txt"
    prompts.write_text("ball\nbox\nrod\nsphere\nthe cubic object\nall shapes\n", encoding="utf-8")
    run_cli(predict_args(toy_dataset, trained_model, toy_dataset["raw"] / "imagesTs", out, prompts), nnunet_env)
    return {"folder": out, "manifest": json.loads((out / "manifest.json").read_text())}


@pytest.fixture(scope="session")
def cowtalk_dataset(nnunet_env, tmp_path_factory) -> dict:
    """Phantom TopCoW -> nnUNetv2_text_convert_cowtalk -> planning (ResEncM, tiny copy) -> embedding."""
    topcow = tmp_path_factory.mktemp("topcow")
    write_phantom_topcow(topcow, n_subjects=3, modalities=("ct",), seed=0)
    run_cli([cli("nnUNetv2_text_convert_cowtalk"), "-i", str(topcow), "-d", str(COWTALK_ID), "--variants", "2",
             "--modality", "ct", "--seed", "0"], nnunet_env)
    raw = next(Path(nnunet_env["nnUNet_raw"]).glob(f"Dataset{COWTALK_ID}_*"))
    run_cli([cli("nnUNetv2_plan_and_preprocess"), "-d", str(COWTALK_ID), "-pl", "nnUNetPlannerResEncM", "-c",
             "3d_fullres", "-np", "1"], nnunet_env)
    pre = Path(nnunet_env["nnUNet_preprocessed"]) / raw.name
    derive_plans(pre, "nnUNetResEncUNetMPlans", COWTALK_PLANS, features=(8, 16, 32, 64), blocks=(1, 1, 1, 1),
                 batch_size=2)
    run_cli([cli("nnUNetv2_text_embed"), "-d", str(COWTALK_ID)], nnunet_env)
    return {"raw": raw, "pre": pre, "id": COWTALK_ID}
