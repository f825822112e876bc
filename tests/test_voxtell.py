"""VoxTell interoperability, against the ``voxtell`` package itself (a test-only dependency).

A small ``VoxTellModel`` (VoxTell's own class, narrower stages via its ``DECODER_CONFIGS``) gets random
weights, norms and heads included, is saved in VoxTell's checkpoint layout and imported; its logits and
masks must equal those of this plugin's network and predictor.
"""
from __future__ import annotations

import json
import pydoc
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import cli, run_cli
from nnunetv2_text.interop.voxtell import (IMPORT_TRAINER, VOXTELL_ARCH, VOXTELL_REQUIRES_IMPORT,
                                           VoxTellImportError, convert_state_dict, import_voxtell,
                                           load_voxtell_weights)
from nnunetv2_text.network import build_text_network
from nnunetv2_text.network.config import voxtell_config

try:
    from voxtell.model.voxtell_model import VoxTellModel
except ImportError as _missing:  # the test extra installs voxtell: there, a failed import is a failure
    import importlib.metadata
    import os

    try:
        importlib.metadata.version("voxtell")
        _installed = True
    except importlib.metadata.PackageNotFoundError:
        _installed = False
    if _installed or os.environ.get("CI"):
        raise ImportError(f"voxtell is {'installed' if _installed else 'required in CI'} but its model does not "
                          f"import ({_missing}): the equivalence tests cannot run") from _missing
    pytest.skip(f"voxtell is not installed (pip install -e '.[test]'): {_missing}", allow_module_level=True)

FEATURES = [4, 8, 16, 16, 16, 16]
PATCH = 64  # six stages: the smallest cube whose bottleneck InstanceNorm still has more than one voxel
G, Q, T, H = 2, 16, 8, 8
ARCH = dict(VOXTELL_ARCH, n_blocks_per_stage=[1, 1, 1, 1, 1, 1], features_per_stage=FEATURES)


class SmallVoxTell(VoxTellModel):
    DECODER_CONFIGS = {k: {"channels": c, "shape": (PATCH >> k,) * 3} for k, c in enumerate(FEATURES)}


def _arch_classes(arch: dict) -> dict:
    return {k: (pydoc.locate(v) if k in VOXTELL_REQUIRES_IMPORT and isinstance(v, str) else v) for k, v in arch.items()}


def voxtell_model(deep_supervision: bool, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = SmallVoxTell(input_channels=1, **_arch_classes(ARCH), decoder_layer=4, text_embedding_dim=T,
                     num_maskformer_stages=5, num_heads=G, query_dim=Q, project_to_decoder_hidden_dim=H,
                     deep_supervision=deep_supervision)
    with torch.no_grad():  # random everything, norms and heads included (VoxTell's init leaves biases at 0)
        for name, p in m.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.ndim > 1 else 0.5) + (1.0 if ".norm" in name and
                                                                            name.endswith("weight") else 0.0))
    return m.eval()


def ours_from(vt: torch.nn.Module, deep_supervision: bool) -> torch.nn.Module:
    net = build_text_network(ARCH, VOXTELL_REQUIRES_IMPORT, 1, voxtell_config(T, Q, G, H), deep_supervision,
                             initialize=False)
    missing = load_voxtell_weights(net, vt.state_dict())
    assert [k for k in missing if "all_modules" not in k] == ["prompt_decoder.text_center"]
    return net.eval()


@pytest.mark.parametrize("deep_supervision", [True, False])
def test_logits_equal_voxtell_in_float64(deep_supervision):
    vt = voxtell_model(deep_supervision).double()
    ours = ours_from(vt, deep_supervision).double()
    x = torch.randn(1, 1, PATCH, PATCH, PATCH, dtype=torch.float64)
    for n in (1, 5):
        text = torch.randn(1, n, T, dtype=torch.float64)
        with torch.no_grad():
            ref, got = vt(x, text), ours(x, text)
            if not deep_supervision:
                ref, got = [ref], [got]
            assert len(got) == len(ref) == (5 if deep_supervision else 1)
            for r, g in zip(ref, got):  # every deep-supervision scale, highest resolution first
                assert g.shape == r.shape
                assert float((g - r).abs().max() / r.abs().max()) < 1e-6
            if n == 5:  # decoding in chunks of prompts, as the predictor does, changes nothing
                skips = ours.encode(x)
                chunks = [ours.decode(skips, text[:, i:i + 2]) for i in range(0, n, 2)]
                chunked = torch.cat([c[0] if deep_supervision else c for c in chunks], 1)
                assert float((chunked - ref[0]).abs().max() / ref[0].abs().max()) < 1e-6


def test_released_configuration_maps_key_for_key():
    """VoxTell's released configuration (ResEnc-L, 2560-dim text, 2048-dim queries, G=32), built on the
    meta device: every tensor it stores maps onto the network with its shape."""
    with torch.device("meta"):
        vt = VoxTellModel(input_channels=1, **_arch_classes(VOXTELL_ARCH), decoder_layer=4, text_embedding_dim=2560,
                          num_maskformer_stages=5, num_heads=32, query_dim=2048, project_to_decoder_hidden_dim=2048,
                          deep_supervision=False)
        ours = build_text_network(VOXTELL_ARCH, VOXTELL_REQUIRES_IMPORT, 1, voxtell_config(), True, initialize=False)
    sd = vt.state_dict()
    assert len(sd) == 1095
    converted = convert_state_dict(sd, ours)
    n_params = sum(int(np.prod(v.shape)) for v in converted.values())
    used = sum(p.numel() for n, p in vt.named_parameters()
               if ".self_attn." not in n and ".norm1." not in n and not n.startswith("decoder.seg_layers.4."))
    assert n_params == used  # every parameter VoxTell's forward uses is carried over, nothing else


def test_mismatching_checkpoint_names_the_first_bad_key():
    vt = voxtell_model(False)
    sd = vt.state_dict()
    net = build_text_network(ARCH, VOXTELL_REQUIRES_IMPORT, 1, voxtell_config(T, Q, G, H), False, initialize=False)
    bad = dict(sd, **{"project_text_embed.0.weight": torch.zeros(H + 1, T)})
    with pytest.raises(VoxTellImportError, match=r"'project_text_embed.0.weight' has shape \(9, 8\)"):
        convert_state_dict(bad, net)
    missing = {k: v for k, v in sd.items() if not k.startswith("project_to_decoder_channels.2.")}
    with pytest.raises(VoxTellImportError, match="lacks 'adapters.2.mlp.0.weight'"):
        convert_state_dict(missing, net)
    shifted = dict(sd, pos_embed=sd["pos_embed"].flip(0))
    with pytest.raises(VoxTellImportError, match="pos_embed"):
        convert_state_dict(shifted, net)


def _save_voxtell_folder(vt: torch.nn.Module, folder: Path) -> Path:
    """VoxTell's layout: plans.json (architecture and patch of 3d_fullres) + fold_0/checkpoint_final.pth."""
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps({"configurations": {"3d_fullres": {
        "patch_size": [PATCH] * 3, "architecture": {"network_class_name": "voxtell.model.voxtell_model.VoxTellModel",
                                                    "arch_kwargs": ARCH, "_kw_requires_import": VOXTELL_REQUIRES_IMPORT}}}}))
    torch.save({"network_weights": vt.state_dict()}, folder / "fold_0" / "checkpoint_final.pth")
    return folder


def _anisotropic_non_ras_image(path: Path) -> None:
    rng = np.random.default_rng(3)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in (40, 75, 70)], indexing="ij")
    body = (x ** 2 + y ** 2 + z ** 2) < 0.8
    arr = np.where(body, 100 + 40 * np.sin(5 * x) + 30 * y + rng.normal(0, 5, body.shape), 0).astype(np.float32)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.8, 1.1, 2.5))
    img.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))  # rotated in-plane: neither RAS nor LPS
    img.SetOrigin((10.0, -20.0, 5.0))
    sitk.WriteImage(img, str(path))


def test_import_then_predict_equals_voxtells_own_predictor(tmp_path, monkeypatch):
    """nnUNetv2_text_import_voxtell, then nnUNetv2_text_predict on an anisotropic, non-RAS NIfTI: the masks
    equal those of VoxTell's own predictor (same random model, same embeddings)."""
    from nnunetv2.imageio.nibabel_reader_writer import NibabelIOWithReorient
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import ZScoreNormalization
    from voxtell.inference.predictor import VoxTellPredictor

    vt = voxtell_model(False, seed=1)
    with torch.no_grad():  # a larger final scale, so the masks are neither empty nor full
        vt.project_to_decoder_channels[0][2].weight.mul_(4.0)
    folder = _save_voxtell_folder(vt, tmp_path / "voxtell_v1")
    prompts = ["Liver", "left kidney", "aorta"]
    bank = np.random.default_rng(0).normal(size=(3, T)).astype(np.float16)
    np.savez(tmp_path / "bank.npz", labels=np.array([p.lower() for p in prompts]), embeddings=bank)
    env = {"nnUNet_results": str(tmp_path / "results"), "nnUNet_raw": str(tmp_path / "raw"),
           "nnUNet_preprocessed": str(tmp_path / "pre")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    import os

    run_env = dict(os.environ)
    run_cli([cli("nnUNetv2_text_import_voxtell"), "-i", str(folder), "-d", "901", "--embedding_bank",
             str(tmp_path / "bank.npz")], run_env)
    inp = tmp_path / "in"
    inp.mkdir()
    _anisotropic_non_ras_image(inp / "case_0000.nii.gz")
    (tmp_path / "p.txt").write_text("\n".join(prompts) + "\n")
    out = tmp_path / "out"
    run_cli([cli("nnUNetv2_text_predict"), "-i", str(inp), "-o", str(out), "--prompts", str(tmp_path / "p.txt"),
             "-d", "901", "-tr", IMPORT_TRAINER, "-p", "nnUNetPlans", "-c", "3d_fullres", "-f", "0", "-device", "cpu",
             "-npp", "1", "-nps", "1"], run_env)
    manifest = json.loads((out / "manifest.json").read_text())["cases"]["case"]

    p = VoxTellPredictor.__new__(VoxTellPredictor)  # VoxTell's predictor on the same model, no Qwen, no download
    p.device, p.normalization = torch.device("cpu"), ZScoreNormalization(intensityproperties={})
    p.tile_step_size, p.perform_everything_on_device, p.patch_size = 0.5, True, [PATCH] * 3
    p.network, p.embedding_bank, p.tokenizer, p.text_backbone = vt, None, None, None
    p.max_text_length, p._text_encoding_model = 8192, "Qwen/Qwen3-Embedding-4B"
    rw = NibabelIOWithReorient()
    img, props = rw.read_images([str(inp / "case_0000.nii.gz")])
    seg = p.predict_single_image(img, text_embeddings=torch.from_numpy(bank.astype(np.float32))[None])
    differing = 0
    for i, prompt in enumerate(prompts):
        rw.write_seg(seg[i], str(tmp_path / f"vt_{i}.nii.gz"), props)
        theirs = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / f"vt_{i}.nii.gz")))
        mine_img = sitk.ReadImage(str(out / manifest[prompt]["file"]))
        mine = sitk.GetArrayFromImage(mine_img)
        assert mine_img.GetDirection() == pytest.approx(sitk.ReadImage(str(inp / "case_0000.nii.gz")).GetDirection())
        assert 0 < theirs.sum() < theirs.size
        differing += int((mine != theirs).sum())
    assert differing == 0, f"{differing} voxels differ"


def test_voxtell_text_recipe_on_a_random_local_model(tmp_path):
    """``--model voxtell:PATH``: lower-cased prompts after VoxTell's instruction, left padding, the last
    token's hidden state, not normalised; checked against the model run on each text alone."""
    from transformers import AutoTokenizer, Qwen3Config, Qwen3Model

    from nnunetv2_text.text.encoder import VOXTELL_INSTRUCTION, TextEncoder, bundled_model_path

    tok = AutoTokenizer.from_pretrained(str(bundled_model_path()))  # any local tokenizer will do
    torch.manual_seed(0)
    model = Qwen3Model(Qwen3Config(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8))
    model.save_pretrained(tmp_path / "tiny_qwen")
    tok.save_pretrained(tmp_path / "tiny_qwen")
    enc = TextEncoder(f"voxtell:{tmp_path / 'tiny_qwen'}")
    assert enc.model_id == "voxtell:tiny_qwen" and enc.instruction == VOXTELL_INSTRUCTION and enc.dim == 32
    texts = ["Left Kidney", "liver", "the renal organ on the left side"]
    emb = enc.encode(texts)
    model.eval()
    for text, vec in zip(texts, emb):
        ids = tok(VOXTELL_INSTRUCTION + text.lower(), return_tensors="pt")
        with torch.no_grad():
            alone = model(**ids).last_hidden_state[0, -1].numpy()
        np.testing.assert_allclose(vec, alone, rtol=1e-4, atol=1e-4)
    assert not np.allclose(np.linalg.norm(emb, axis=1), 1.0)  # VoxTell does not normalise
    np.testing.assert_array_equal(enc.encode(["LIVER"]), enc.encode(["liver"]))


def test_fine_tuning_loads_every_pretrained_tensor_and_trains(toy_dataset, nnunet_env, tmp_path):
    """An imported (small) VoxTell checkpoint fine-tuned on the toy dataset through nnUNetv2_train
    -pretrained_weights: every VoxTell tensor but the deep-supervision heads is loaded, the text is kept,
    and the result predicts."""
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
    from nnunetv2.run.run_training import get_trainer_from_args

    from conftest import DATASET_ID, TINY_PLANS, predict_args

    trainer_name = "TextFusionTrainer_VoxTellTest"
    arch = {**VOXTELL_ARCH, "features_per_stage": FEATURES, "n_blocks_per_stage": [1] * 6,
            "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 1, 1]]}

    class TinyVoxTell(VoxTellModel):
        DECODER_CONFIGS = {k: {"channels": c, "shape": (s,) * 3} for k, c, s in zip(range(6), FEATURES,
                                                                                     [32, 16, 8, 4, 2, 2])}

    torch.manual_seed(0)
    vt = TinyVoxTell(input_channels=1, **_arch_classes(arch), decoder_layer=4, text_embedding_dim=384,
                     num_maskformer_stages=5, num_heads=2, query_dim=16, project_to_decoder_hidden_dim=8)
    folder = tmp_path / "voxtell_small"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps({"configurations": {"3d_fullres": {
        "patch_size": [32] * 3, "architecture": {"arch_kwargs": arch, "_kw_requires_import": VOXTELL_REQUIRES_IMPORT}}}}))
    torch.save({"network_weights": vt.state_dict()}, folder / "fold_0" / "checkpoint_final.pth")
    imported = import_voxtell(folder, tmp_path / "imported", 902) / "fold_0" / "checkpoint_final.pth"

    trainer = get_trainer_from_args(str(DATASET_ID), "3d_fullres", 0, trainer_name, TINY_PLANS, device=torch.device("cpu"))
    trainer.initialize()
    load_pretrained_weights(trainer.network, str(imported))
    pretrained = torch.load(imported, map_location="cpu", weights_only=False)["network_weights"]
    mine = trainer.network.state_dict()
    skipped = sorted(k for k in mine if not torch.equal(mine[k], pretrained[k]))
    assert skipped and all(".seg_layers." in k for k in skipped), skipped  # only the deep-supervision heads
    assert sum(".seg_layers." in k for k in mine) == len(skipped)

    res = run_cli([cli("nnUNetv2_train"), str(DATASET_ID), "3d_fullres", "0", "-tr", trainer_name, "-p", TINY_PLANS,
                   "-device", "cpu", "-pretrained_weights", str(imported)], nnunet_env)
    assert "Loading pretrained weights" in res.stdout
    prompts = tmp_path / "p.txt"
    prompts.write_text("ball\nbox\n")
    out = tmp_path / "out"
    run_cli(predict_args(toy_dataset, {"trainer": trainer_name, "plans": TINY_PLANS},
                         toy_dataset["raw"] / "imagesTs", out, prompts), nnunet_env)
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["cases"]) == 3 and manifest["model"]["trainer"] == trainer_name
