"""TextTrainerBase: what every trainer of a text-conditioned network shares, on top of nnU-Net's own.

nnU-Net does the rest (plans, preprocessing, data loading, augmentation, poly LR, logging, checkpoints).
This base adds what any text-conditioned network needs, whatever its prompts mean:

- the dataset's text (vocabulary or instructions with cached embeddings; the encoder is never loaded) and
  a network built by the one builder from the plans and a :class:`TextNetworkConfig`;
- nnU-Net's own train step and validation step, run with the batch's text bound to the network
  (:meth:`prompt_batch`, the one hook each trainer fills in);
- the left-right axis is never mirrored, in training nor in the saved test-time axes
  (:mod:`nnunetv2_text.utils.laterality`), and the dataset must be read in patient orientation;
- AdamW with nnU-Net's poly schedule;
- checkpoints also store the text network config, the encoder id, embedding dim and vocabulary.

Its two children are siblings: :class:`~nnunetv2_text.training.trainer.TextFusionTrainer` (a prompt names a
structure; per-prompt binary masks) and :class:`~nnunetv2_text.training.cowtalk.CoWTalkRefineTrainer` (an
instruction edits a shape; nnU-Net's multi-class loss and validation as they are).

Tunables are class attributes, so a variant is a three-line subclass.
"""
from __future__ import annotations

import functools
import os
import shutil
import types
from collections import Counter
from pathlib import Path
from typing import Optional

import torch
from batchgenerators.utilities.file_and_folder_operations import load_pickle
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_text.inference.plain_nnunet import refuse_plain_nnunet_predictor
from nnunetv2_text.network import TextNetworkConfig, TextPromptableUNet, build_text_network, unwrap_network
from nnunetv2_text.text.dataset_text import DatasetText, load_dataset_text, text_folder
from nnunetv2_text.utils.laterality import left_right_axis_from_properties, mirror_axes_without
from nnunetv2_text.utils.orientation import properties_orientation, require_canonical_orientation

CHECKPOINT_TEXT_KEY = "text"


def check_cases_have_foreground(preprocessed_folder: str, keys) -> None:
    """Stop on a training case without any labelled voxel: none of its prompts could be positive, and an
    all-empty target usually means a broken label file rather than an intended negative."""
    from batchgenerators.utilities.file_and_folder_operations import load_pickle

    for k in keys:
        # nnU-Net's own per-case properties file, written by its preprocessing
        locs = load_pickle(str(Path(preprocessed_folder) / f"{k}.pkl")).get("class_locations", {})
        if not any(len(v) for v in locs.values()):
            raise RuntimeError(f"training case '{k}' has no foreground voxel (no label > 0 in its label map, "
                               f"see {preprocessed_folder}/{k}.pkl); fix or remove it from the dataset")


class _instance_only:
    """Descriptor for ``build_network_architecture``: a method on instances (the trainer); on the class,
    which is how nnU-Net's own predictor calls it, a stand-in that explains which command to use."""

    def __init__(self, fn):
        self.fn = fn
        functools.update_wrapper(self, fn)

    def __get__(self, obj, owner=None):
        if obj is None:
            return functools.partial(_refuse_plain_predictor, owner.__name__)
        return types.MethodType(self.fn, obj)


def _refuse_plain_predictor(trainer_name: str, plans_manager=None, configuration_manager=None, *args, **kwargs):
    # the parameter names matter: nnU-Net inspects them to pick its calling convention
    refuse_plain_nnunet_predictor(trainer_name)


class TextTrainerBase(nnUNetTrainer):
    # --- schedule (read in __init__) -------------------------------------------------------------------
    epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations_per_epoch: int = 50
    #: VoxTell samples foreground-containing patches 85 % of the time (nnU-Net default: 33 %)
    foreground_oversampling: float = 0.85
    #: stop unless dataset.json names a reorienting reader (left and right are the patient's, see
    #: utils/orientation.py)
    canonical_orientation: bool = True
    # --- optimisation ---------------------------------------------------------------------------------
    #: AdamW, not nnU-Net's SGD (momentum 0.99): with SGD the text network failed to overfit even one toy
    #: image (figures in docs/RESULTS.md)
    learning_rate: float = 1e-3
    # --- network (TextNetworkConfig fields; text_dim comes from the embedding cache) ------------------
    network_overrides: dict = {}

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = self.epochs
        self.num_iterations_per_epoch = self.iterations_per_epoch
        self.num_val_iterations_per_epoch = self.val_iterations_per_epoch
        self.oversample_foreground_percent = self.foreground_oversampling
        self.initial_lr = self.learning_rate
        self.text: Optional[DatasetText] = None
        self.text_config: Optional[TextNetworkConfig] = None
        self.sources = None  # a merged dataset's partial-label record (set in initialize)
        self._left_right_axis: Optional[int] = None
        self._orientation: Optional[dict] = None

    # ------------------------------------------------------------------ setup
    def load_text(self) -> DatasetText:
        """The dataset's vocabulary and cached embeddings; the text encoder itself is never loaded here."""
        return load_dataset_text(self.preprocessed_dataset_folder_base, self.dataset_json)

    def initialize(self):
        if not self.was_initialized:
            if self.canonical_orientation:
                require_canonical_orientation(self.dataset_json, self.plans_manager.dataset_name,
                                              self.plans_manager.plans)
            self.text = self.load_text()
            self.text_config = TextNetworkConfig(text_dim=self.text.dim, **self.network_config_overrides())
            self.print_to_log_file(f"text: encoder {self.text.model_id} (dim {self.text.dim}), "
                                   f"{len(self.text.vocabulary.concepts)} concepts, {len(self.text.terms)} terms; "
                                   f"network {self.text_config.to_dict()}")
        super().initialize()
        self.term_embeddings = torch.from_numpy(self.text.embeddings).to(self.device)

    def network_config_overrides(self) -> dict:
        return dict(self.network_overrides)

    @_instance_only
    def build_network_architecture(self, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision: bool = True) -> torch.nn.Module:
        """Instance method (not static as in nnU-Net): the network needs the text config, which depends on
        the dataset's embedding cache. The predictor rebuilds it from the checkpoint with the same builder;
        nnU-Net's own predictor, which calls this on the class, is sent to ``nnUNetv2_text_predict``.
        The prompt centre (mean of the vocabulary's term embeddings) is set here and saved with the weights.

        Without deep supervision only the last head is used: the others are frozen here, before nnU-Net
        wraps the network in DDP, which requires a gradient for every trainable parameter."""
        arch, requires_import = self.architecture(configuration_manager)
        net = build_text_network(arch, requires_import, num_input_channels, self.text_config, enable_deep_supervision)
        if not enable_deep_supervision:
            for head in net.decoder.deep_supervision_heads():
                head.requires_grad_(False)
        net.prompt_decoder.set_text_center(torch.from_numpy(self.text.prompt_embeddings()))
        return net

    def architecture(self, configuration_manager) -> tuple:
        """(arch kwargs, names to import) of the image encoder/decoder: the plans' (a variant may differ, and
        then records its own in the checkpoint for the predictor)."""
        return (configuration_manager.network_arch_init_kwargs,
                configuration_manager.network_arch_init_kwargs_req_import)

    def configure_optimizers(self):
        """AdamW with nnU-Net's poly schedule (the transformer parts train badly with SGD)."""
        optimizer = torch.optim.AdamW(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    # ------------------------------------------------------------------ laterality
    def left_right_axis(self) -> Optional[int]:
        if self._left_right_axis is None:
            if self.dataset_class is None:
                from nnunetv2.training.dataloading.utils import infer_dataset_class

                self.dataset_class = infer_dataset_class(self.preprocessed_dataset_folder)
            keys = self.dataset_class.get_identifiers(self.preprocessed_dataset_folder)
            props = self.dataset_class(self.preprocessed_dataset_folder, keys[:1]).load_case(keys[0])[3]
            self._left_right_axis = left_right_axis_from_properties(
                props, self.plans_manager.transpose_forward)
        return self._left_right_axis

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rot, dummy_2d, initial_patch_size, mirror_axes = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        mirror_axes = mirror_axes_without(mirror_axes, self.left_right_axis())
        self.inference_allowed_mirroring_axes = mirror_axes
        self.print_to_log_file(f"left-right axis {self.left_right_axis()} is never mirrored; "
                               f"mirror axes {mirror_axes}")
        return rot, dummy_2d, initial_patch_size, mirror_axes

    # ------------------------------------------------------------------ steps
    def _to_device(self, batch: dict):
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target.to(self.device, non_blocking=True)
        return data, target

    def prompt_batch(self, batch: dict, data: torch.Tensor, target, training: bool):
        """(data, text (B, N, dim), targets like ``target``, concept ids (B, N) or None) for one batch: what
        the prompts are is each trainer's own business (it may also edit the input)."""
        raise NotImplementedError

    def text_network(self) -> TextPromptableUNet:
        """The text network itself, whether nnU-Net wrapped it in DDP, compiled it, or both."""
        return unwrap_network(self.network)

    def train_step(self, batch: dict) -> dict:
        """nnU-Net's own train step (AMP, grad scaler, clipping, optimizer), run with this batch's sampled
        prompts bound to the network and its per-prompt targets: upstream fixes to the step apply here."""
        data, target = self._to_device(batch)
        data, text, target, _ = self.prompt_batch(batch, data, target, training=True)
        with self.text_network().bind_text(text):
            return super().train_step({**batch, "data": data, "target": target})

    def validation_step(self, batch: dict) -> dict:
        """nnU-Net's own validation step (its loss and per-class pseudo Dice), with the batch's text bound."""
        data, target = self._to_device(batch)
        data, text, target, _ = self.prompt_batch(batch, data, target, training=False)
        with self.text_network().bind_text(text):
            return super().validation_step({**batch, "data": data, "target": target})

    def orientation_entry(self) -> dict:
        """How the training images were read and stored, so the predictor can tell which inputs differ."""
        if self._orientation is None:
            folder = Path(self.preprocessed_dataset_folder)
            codes = Counter()
            for f in sorted(folder.glob("*.pkl")):  # nnU-Net's own per-case properties
                codes[properties_orientation(load_pickle(str(f)))] += 1
            self._orientation = {"reader": self.plans_manager.plans.get("image_reader_writer"),
                                 "training": {str(k): v for k, v in sorted(codes.items(), key=str)}}
        return self._orientation

    def get_tr_and_val_datasets(self):
        dataset_tr, dataset_val = super().get_tr_and_val_datasets()
        check_cases_have_foreground(self.preprocessed_dataset_folder, list(dataset_tr.identifiers))
        return dataset_tr, dataset_val

    def on_train_start(self):
        super().on_train_start()
        self._copy_text_to_results()
        self._log_validation_order()

    def _copy_text_to_results(self) -> None:
        """The predictor reads (and extends) the model's own copy of the cache."""
        if self.local_rank == 0:
            src = text_folder(self.preprocessed_dataset_folder_base)
            dst = Path(self.output_folder_base) / "text"
            dst.mkdir(parents=True, exist_ok=True)
            for f in src.iterdir():
                if f.is_file():
                    shutil.copyfile(f, dst / f.name)

    def _log_validation_order(self) -> None:
        """Where a subclass reports per-concept pseudo Dice, it names the concepts' order here."""

    # ------------------------------------------------------------------ checkpoints
    def text_checkpoint_entry(self) -> dict:
        return {"network_config": self.text_config.to_dict(), "model_id": self.text.model_id,
                "instruction": self.text.instruction, "embedding_dim": self.text.dim,
                "vocabulary": self.text.vocabulary.to_dict(), "vocabulary_sha256": self.text.vocabulary.sha256(),
                "left_right_axis": self.left_right_axis(), "orientation": self.orientation_entry(),
                "foreign": list(self.text.foreign)}

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint, then a ``text`` entry (config, encoder id, dim, vocabulary and its hash).

        nnU-Net builds and writes its dict in one method, so the entry is added to the written file (read
        back memory-mapped, replaced atomically): whatever upstream adds to its checkpoints is kept."""
        super().save_checkpoint(filename)
        if self.local_rank != 0 or self.disable_checkpointing:
            return
        ckpt = torch.load(filename, map_location="cpu", weights_only=False, mmap=True)
        ckpt[CHECKPOINT_TEXT_KEY] = self.text_checkpoint_entry()
        tmp = f"{filename}.{os.getpid()}.tmp"
        torch.save(ckpt, tmp)
        os.replace(tmp, filename)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        ckpt = filename_or_checkpoint
        if isinstance(ckpt, str):
            ckpt = torch.load(ckpt, map_location="cpu", weights_only=False)  # nnU-Net's own checkpoint format
        if not self.was_initialized:
            self.initialize()
        saved = ckpt.get(CHECKPOINT_TEXT_KEY)
        if saved is not None:
            mine = self.text_checkpoint_entry()
            for key in ("network_config", "model_id", "embedding_dim"):
                if saved[key] != mine[key]:
                    raise RuntimeError(f"checkpoint was trained with {key}={saved[key]!r}, the dataset's text "
                                       f"now gives {mine[key]!r}; rebuild the cache with that encoder")
        super().load_checkpoint(filename_or_checkpoint)
