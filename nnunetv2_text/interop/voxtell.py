"""VoxTell checkpoints -> this project's network: key mapping, checks, and the imported model folder.

A VoxTell model folder is ``plans.json`` + ``fold_0/checkpoint_final.pth`` whose ``network_weights``
VoxTell loads strictly into its ``VoxTellModel``. Its state dict names each conv/norm twice (the
``all_modules`` aliases of dynamic-network-architectures' blocks), holds a second copy of the encoder
under ``decoder.encoder``, and keeps parameters its forward never uses (the prompt decoder's
``self_attn``/``norm1``, ``decoder.seg_layers.4``). Those are dropped; every other tensor must map onto
this network with the same shape, and the first that does not stops the import, named.
"""
from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Mapping, Tuple

import numpy as np
import torch

from nnunetv2_text.errors import UserInputError
from nnunetv2_text.inference.native_spacing import NATIVE_SPACING_PREPROCESSOR
from nnunetv2_text.network import build_text_network
from nnunetv2_text.network.config import voxtell_config
from nnunetv2_text.network.voxtell import voxtell_positions
from nnunetv2_text.text.cache import EmbeddingCache
from nnunetv2_text.text.encoder import VOXTELL_INSTRUCTION
from nnunetv2_text.utils.io import atomic_folder, atomic_write_json

#: VoxTell's image encoder (ResEnc-L, 6 stages), as its trainer and predictor build it
VOXTELL_ARCH = {
    "n_stages": 6, "features_per_stage": [32, 64, 128, 256, 320, 320],
    "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [[3, 3, 3]] * 6,
    "strides": [[1, 1, 1]] + [[2, 2, 2]] * 5, "n_blocks_per_stage": [1, 3, 4, 6, 6, 6],
    "n_conv_per_stage_decoder": [1, 1, 1, 1, 1], "conv_bias": True,
    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
    "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
VOXTELL_REQUIRES_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]

_UNUSED = (re.compile(r"(^|\.)all_modules\."), re.compile(r"^decoder\.encoder\."),
           re.compile(r"^transformer_decoder\.layers\.\d+\.(self_attn|norm1)\."))


class VoxTellImportError(UserInputError):
    """A VoxTell checkpoint that does not fit the network it is imported into."""


def _target_key(key: str, num_decoder_stages: int) -> str:
    """VoxTell key -> this network's key (see the module docstring for what is dropped before)."""
    if key.startswith(("encoder.", "decoder.")):
        return key
    if key.startswith(("project_text_embed.", "project_bottleneck_embed.")):
        return "prompt_decoder." + key
    if key.startswith("transformer_decoder."):
        return "prompt_decoder." + key[len("transformer_decoder."):]
    m = re.match(r"project_to_decoder_channels\.(\d+)\.(.*)", key)
    if m:  # VoxTell's k counts from full resolution (0) up; adapters are keyed by decoder stage (0: lowest)
        return f"adapters.{num_decoder_stages - 1 - int(m.group(1))}.mlp.{m.group(2)}"
    return key


def convert_state_dict(source: Mapping[str, torch.Tensor], network: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """VoxTell ``network_weights`` -> a state dict for ``network`` (a ``prompt_flavour="voxtell"`` text UNet).

    Raises :class:`VoxTellImportError` naming the first key that is missing, surplus or of another shape,
    and when the checkpoint's positional table differs from the one this network computes."""
    target = network.state_dict()
    n_dec = network.decoder.num_stages
    last_head = f"decoder.seg_layers.{n_dec - 1}."  # built by VoxTell, never used: its output is a dot product
    out: Dict[str, torch.Tensor] = {}
    for key, value in source.items():
        if any(p.search(key) for p in _UNUSED) or key.startswith(last_head):
            continue
        if key == "pos_embed":
            _check_positions(value, network)
            continue
        mine = _target_key(key, n_dec)
        if mine not in target:
            raise VoxTellImportError(f"checkpoint key '{key}' has no place in the network (as '{mine}'): "
                                     f"not a VoxTell 0.1.x checkpoint of this configuration?")
        if tuple(target[mine].shape) != tuple(value.shape):
            raise VoxTellImportError(f"checkpoint key '{key}' has shape {tuple(value.shape)}, the network's "
                                     f"'{mine}' has {tuple(target[mine].shape)}")
        out[mine] = value
    aliases = _alias_keys(network)
    missing = [k for k in target if k not in out and k not in aliases and not k.endswith("text_center")]
    if missing:
        raise VoxTellImportError(f"the checkpoint lacks '{missing[0]}' (and {len(missing) - 1} more network keys)")
    return out


def _alias_keys(network: torch.nn.Module) -> set:
    """State-dict keys that name a tensor already named by an earlier key (dynamic-network-architectures'
    ``all_modules`` registers each conv and norm twice)."""
    seen, aliases = set(), set()
    for k, v in network.state_dict(keep_vars=True).items():
        if id(v) in seen:
            aliases.add(k)
        seen.add(id(v))
    return aliases


def _check_positions(pos: torch.Tensor, network: torch.nn.Module) -> None:
    """VoxTell stores its positional table; this network computes it. They must agree (token order
    included), else attention would pair image tokens with the wrong positions."""
    n, _, dim = pos.shape
    side = round(n ** (1 / 3))
    if side ** 3 != n or dim != network.config.prompt_dim:
        raise VoxTellImportError(f"checkpoint key 'pos_embed' has shape {tuple(pos.shape)}: expected a cubic grid "
                                 f"of {network.config.prompt_dim}-dim positions")
    if pos.is_meta:  # a checkpoint built on the meta device (shape checks only)
        return
    # VoxTell's table is indexed (axis 3, axis 4, axis 2); reorder it to this network's flatten(2) order
    stored = pos.reshape(side, side, side, dim).permute(2, 0, 1, 3).reshape(n, dim).float()
    mine = voxtell_positions((side, side, side), dim)
    if not torch.allclose(stored, mine, atol=1e-4):
        raise VoxTellImportError(f"checkpoint key 'pos_embed' differs from VoxTell's sine/cosine table "
                                 f"(max difference {float((stored - mine).abs().max()):.3g})")


def load_voxtell_weights(network: torch.nn.Module, source: Mapping[str, torch.Tensor]) -> List[str]:
    """Load VoxTell weights into ``network``; returns the keys it kept at their initial values (none for
    a complete checkpoint other than aliases and the unused ``text_center``)."""
    converted = convert_state_dict(source, network)
    result = network.load_state_dict(converted, strict=False)
    return list(result.missing_keys)


def split_checkpoint(checkpoint: Mapping) -> Tuple[Dict[str, torch.Tensor], dict]:
    """(network weights, the rest) of a VoxTell ``checkpoint_final.pth``."""
    if "network_weights" not in checkpoint:
        raise VoxTellImportError(f"checkpoint has no 'network_weights' (keys: {sorted(checkpoint)[:8]})")
    return dict(checkpoint["network_weights"]), {k: v for k, v in checkpoint.items() if k != "network_weights"}


#: VoxTell's text recipe, recorded as the encoder of an imported model (text/encoder.py)
VOXTELL_TEXT_MODEL = "voxtell:Qwen/Qwen3-Embedding-4B"
IMPORT_TRAINER = "TextFusionTrainer_VoxTell"
IMPORT_PLANS = "nnUNetPlans"
IMPORT_CONFIGURATION = "3d_fullres"


def config_from_weights(weights: Mapping[str, torch.Tensor], features: List[int]):
    """The network configuration a VoxTell checkpoint implies (widths read from its tensors; heads and the
    attended stage are VoxTell constants, not stored)."""
    def shape(key: str) -> Tuple[int, ...]:
        if key not in weights:
            raise VoxTellImportError(f"checkpoint lacks '{key}': not a VoxTell checkpoint")
        return tuple(weights[key].shape)

    text_hidden, text_dim = shape("project_text_embed.0.weight")
    query_dim = shape("project_text_embed.2.weight")[0]
    adapter_hidden = shape("project_to_decoder_channels.0.0.weight")[0]
    guidance = shape("project_to_decoder_channels.1.2.weight")[0] // features[1]
    cfg = voxtell_config(text_dim=text_dim, query_dim=query_dim, guidance_dim=guidance, adapter_hidden=adapter_hidden)
    layers = len({k.split(".")[2] for k in weights if k.startswith("transformer_decoder.layers.")})
    ffn = shape("transformer_decoder.layers.0.linear1.weight")[0]
    return replace(cfg, prompt_layers=layers, prompt_ffn_dim=ffn, prompt_text_hidden=text_hidden)


def nnunet_plans(arch_kwargs: dict, patch_size: List[int], dataset_name: str) -> dict:
    """nnU-Net plans for VoxTell's way of reading images: NibabelIOWithReorient (RAS), crop to non-zero,
    z-score, no resampling (:mod:`nnunetv2_text.inference.native_spacing`), its patch and encoder."""
    n = len(patch_size)
    return {
        "dataset_name": dataset_name, "plans_name": IMPORT_PLANS,
        "original_median_spacing_after_transp": [1.0] * n, "original_median_shape_after_transp": list(patch_size),
        "image_reader_writer": "NibabelIOWithReorient", "transpose_forward": list(range(n)),
        "transpose_backward": list(range(n)), "experiment_planner_used": "nnunetv2_text VoxTell import",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {"max": 0.0, "mean": 0.0, "median": 0.0, "min": 0.0,
                                                              "percentile_00_5": 0.0, "percentile_99_5": 0.0,
                                                              "std": 1.0}},
        "configurations": {IMPORT_CONFIGURATION: {
            "data_identifier": "voxtell_import", "preprocessor_name": NATIVE_SPACING_PREPROCESSOR,
            "batch_size": 2, "patch_size": list(patch_size), "median_image_size_in_voxels": list(patch_size),
            "spacing": [1.0] * n, "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
            "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
            "architecture": {"network_class_name":
                             "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
                             "arch_kwargs": arch_kwargs, "_kw_requires_import": VOXTELL_REQUIRES_IMPORT},
            "batch_dice": False}}}


def _read_embedding_bank(path, text_dim: int) -> tuple:
    """(lower-cased labels, float32 vectors) of VoxTell's ``.npz`` bank, checked against the model's dim."""
    with np.load(path, allow_pickle=False) as z:
        labels, vectors = [str(s).lower() for s in z["labels"]], np.asarray(z["embeddings"], np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != text_dim or len(labels) != len(vectors):
        raise VoxTellImportError(f"{path}: embeddings of shape {vectors.shape} for {len(labels)} "
                                 f"labels, the model takes {text_dim}-dim embeddings")
    return labels, vectors


def import_voxtell(voxtell_folder, results_root, dataset_id: int, name: str = "VoxTell",
                   embedding_bank=None, overwrite: bool = False) -> Path:
    """VoxTell model folder -> ``<results_root>/DatasetXXX_name/TextFusionTrainer_VoxTell__nnUNetPlans__3d_fullres``
    with plans, dataset.json, ``fold_0/checkpoint_final.pth`` (nnU-Net's checkpoint layout, this network's
    weights and a ``text`` entry) and, from ``embedding_bank`` (VoxTell's ``.npz``), a seeded embedding
    cache. Everything is checked before the folder appears (written aside, then renamed)."""
    src = Path(voxtell_folder)
    plans_file, ckpt_file = src / "plans.json", src / "fold_0" / "checkpoint_final.pth"
    for f in (plans_file, ckpt_file):
        if not f.is_file():
            raise VoxTellImportError(f"{f} not found: a VoxTell model folder holds plans.json and "
                                     f"fold_0/checkpoint_final.pth")
    vt_plans = json.loads(plans_file.read_text(encoding="utf-8"))
    try:
        conf = vt_plans["configurations"][IMPORT_CONFIGURATION]
        arch_kwargs, patch = dict(conf["architecture"]["arch_kwargs"]), list(conf["patch_size"])
    except KeyError as e:
        raise VoxTellImportError(f"{plans_file}: no {e} in configurations/3d_fullres (VoxTell reads its "
                                 f"architecture and patch size from there)") from None
    weights, _ = split_checkpoint(torch.load(ckpt_file, map_location="cpu", weights_only=False))
    config = config_from_weights(weights, arch_kwargs["features_per_stage"])
    network = build_text_network(arch_kwargs, VOXTELL_REQUIRES_IMPORT, 1, config, deep_supervision=True,
                                 initialize=False)
    load_voxtell_weights(network, weights)

    dataset_name = f"Dataset{int(dataset_id):03d}_{name}"
    plans = nnunet_plans(arch_kwargs, patch, dataset_name)
    dataset_json = {"channel_names": {"0": "image"}, "labels": {"background": 0, "structure": 1},
                    "numTraining": 0, "file_ending": ".nii.gz", "name": name,
                    "overwrite_image_reader_writer": "NibabelIOWithReorient",
                    "description": f"VoxTell weights imported from {src} by nnUNetv2_text_import_voxtell "
                                   f"(weights: CC-BY-NC-SA 4.0, see docs/VOXTELL.md)"}
    text_entry = {"network_config": config.to_dict(), "model_id": VOXTELL_TEXT_MODEL,
                  "instruction": VOXTELL_INSTRUCTION, "embedding_dim": config.text_dim, "vocabulary": None,
                  "vocabulary_sha256": None, "left_right_axis": None, "lowercase": True,
                  "orientation": {"reader": "NibabelIOWithReorient", "training": {}}, "source": str(src)}
    checkpoint = {"network_weights": network.state_dict(), "optimizer_state": None, "grad_scaler_state": None,
                  "logging": {}, "_best_ema": None, "current_epoch": 0,
                  "init_args": {"plans": plans, "configuration": IMPORT_CONFIGURATION, "fold": 0,
                                "dataset_json": dataset_json, "device": "cpu"},
                  "trainer_name": IMPORT_TRAINER, "inference_allowed_mirroring_axes": None, "text": text_entry}
    bank = None if embedding_bank is None else _read_embedding_bank(embedding_bank, config.text_dim)

    others = [d for d in Path(results_root).glob(f"Dataset{int(dataset_id):03d}_*") if d.name != dataset_name]
    if others:
        raise VoxTellImportError(f"dataset id {dataset_id} is already used by {others[0]}")
    final = Path(results_root) / dataset_name / f"{IMPORT_TRAINER}__{IMPORT_PLANS}__{IMPORT_CONFIGURATION}"
    if final.exists() and not overwrite:
        raise VoxTellImportError(f"{final} exists (pass --overwrite to replace it)")
    with atomic_folder(final) as tmp:  # an interrupted import leaves no half model folder
        (tmp / "fold_0").mkdir()
        atomic_write_json(tmp / "plans.json", plans)
        atomic_write_json(tmp / "dataset.json", dataset_json)
        torch.save(checkpoint, tmp / "fold_0" / "checkpoint_final.pth")
        (tmp / "text").mkdir()
        if bank is not None:
            cache = EmbeddingCache(tmp / "text" / "embeddings.safetensors")
            cache.add(VOXTELL_TEXT_MODEL, VOXTELL_INSTRUCTION, *bank)
            cache.save()
    return final
