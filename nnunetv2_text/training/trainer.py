"""TextFusionTrainer: nnU-Net training of the text-promptable ResEnc UNet.

Everything nnU-Net does stays (plans, preprocessing, data loading, augmentation, poly LR, logging,
checkpoints); this trainer changes what the network sees and what it is scored against:

- every sample gets ``num_positive_prompts`` present and ``num_negative_prompts`` absent concepts, and
  sometimes a prompt that names nothing the dataset labels, in place of an absent one or added
  (:mod:`.prompts`); the network gets their cached embeddings and returns one logit map per prompt;
- targets are binary per prompt (unions for combined concepts), loss is nnU-Net's Dice + BCE with its
  deep-supervision weights (optionally with a term for empty targets, :mod:`.loss`);
- the left-right axis is never mirrored, in training nor in the saved test-time axes
  (:mod:`nnunetv2_text.utils.laterality`);
- checkpoints also store the text network config, the encoder id, embedding dim and vocabulary.

Tunables are class attributes, so a variant is a three-line subclass (see :mod:`.variants`).
"""
from __future__ import annotations

import functools
from collections import Counter
import os
import shutil
import types
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import load_pickle
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast

from nnunetv2_text.inference.plain_nnunet import refuse_plain_nnunet_predictor
from nnunetv2_text.network import TextNetworkConfig, TextPromptableUNet, build_text_network, unwrap_network
from nnunetv2_text.text.dataset_text import DatasetText, load_dataset_text, text_folder
from nnunetv2_text.text.sources import SOURCES_FILE, load_sources
from nnunetv2_text.training.loss import EmptyTargetLoss, prompt_dice_bce_loss
from nnunetv2_text.training.prompts import ConceptTargets, PromptSampler
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


class TextFusionTrainer(nnUNetTrainer):
    # --- schedule (read in __init__) -------------------------------------------------------------------
    epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations_per_epoch: int = 50
    #: VoxTell samples foreground-containing patches 85 % of the time (nnU-Net default: 33 %)
    foreground_oversampling: float = 0.85
    # --- prompts ------------------------------------------------------------------------------------------
    num_positive_prompts: int = 2
    num_negative_prompts: int = 1
    main_term_probability: float = 0.25
    #: chance that a sample gets a foreign prompt: a text that names nothing the dataset labels, with an
    #: empty target. It replaces the sample's absent concept, or is added where the patch shows them all.
    #: 0.2, not 0.5: the more foreign prompts, the later a short schedule learns left from right, and at 0.2
    #: the network still empties most foreign prompts itself (figures in docs/RESULTS.md)
    foreign_prompt_probability: float = 0.2
    #: the earlier rule (ablation): the foreign prompt replaces the last prompt even when that one is present
    foreign_replaces_present: bool = False
    #: merged datasets: prompt a case only with concepts its source annotates (False: the naive ablation,
    #: which teaches every unlabelled structure as absent)
    use_partial_labels: bool = True
    #: None: nnU-Net's Dice + BCE only. A fraction t of the patch: also score every empty-target prompt by
    #: its predicted volume V as V / (V + t * voxels), which soft Dice cannot do (:mod:`.loss`)
    empty_target_tolerance: Optional[float] = None
    #: the weight of that term against Dice + BCE (at 1 the toy's main terms fell to Dice 0.63 in 800 steps,
    #: docs/RESULTS.md)
    empty_target_weight: float = 0.2
    #: at most this many concepts are scored per validation batch (online pseudo Dice)
    max_val_prompts: int = 8
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
        self.prompt_sampler = PromptSampler(self.text.vocabulary, self.text.terms, self.num_positive_prompts,
                                            self.num_negative_prompts, self.main_term_probability,
                                            foreign=self.text.foreign,
                                            foreign_probability=self.foreign_prompt_probability,
                                            foreign_replaces_present=self.foreign_replaces_present)
        if self.foreign_prompt_probability and not self.text.foreign:
            self.print_to_log_file("no foreign prompts in the dataset's text folder (embedded by an older "
                                   "version?): rerun nnUNetv2_text_embed to teach unknown prompts 'not here'")
        self.concept_targets = ConceptTargets(self.text.vocabulary, self.device)
        self.sources = load_sources(text_folder(self.preprocessed_dataset_folder_base) / SOURCES_FILE)
        if self.sources is not None:
            self.print_to_log_file(f"partial labels: {len(self.sources.sources)} sources; prompts of a case come "
                                   f"only from the concepts its source annotates")
        self.val_concepts = [i for i, c in enumerate(self.text.vocabulary.concepts) if len(c.labels) == 1]

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

    def _build_loss(self):
        loss = prompt_dice_bce_loss(self.is_ddp)
        if self._do_i_compile():
            loss.dc = torch.compile(loss.dc)
        if self.empty_target_tolerance is not None:
            loss = EmptyTargetLoss(loss, self.empty_target_tolerance, self.empty_target_weight)
        return self._wrap_deep_supervision(loss)

    def _wrap_deep_supervision(self, loss):
        """nnU-Net's weights 1, 1/2, 1/4, ... normalised, lowest output unused (tiny weight under DDP)."""
        if not self.enable_deep_supervision:
            return loss
        weights = np.array([1 / (2 ** i) for i in range(len(self._get_deep_supervision_scales()))])
        weights[-1] = 1e-6 if (self.is_ddp and not self._do_i_compile()) else 0
        return DeepSupervisionWrapper(loss, weights / weights.sum())

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
        """(data, text (B, N, dim), per-prompt targets like ``target``, concept ids (B, N)) for one batch.

        The hook a refinement trainer overrides: it may also edit the input (e.g. drop an error)."""
        full = target[0] if isinstance(target, list) else target
        if training:
            pb = self.prompt_sampler.sample(full, self.annotated_concepts(batch["keys"]))
            concepts, terms = pb.concept_ids, pb.term_ids
        else:
            concepts = self._validation_concepts(full)
            terms = torch.tensor([[self.prompt_sampler.main_ids[c] for c in row] for row in concepts.tolist()])
        text = self.term_embeddings[terms.to(self.device)]
        concepts = concepts.to(self.device)
        tgt = [self.concept_targets(t, concepts) for t in target] if isinstance(target, list) \
            else self.concept_targets(target, concepts)
        return data, text, tgt, concepts

    def annotated_concepts(self, keys) -> Optional[list]:
        """Per case, the concept indices its source annotates (None for a fully annotated dataset)."""
        if self.sources is None or not self.use_partial_labels:
            return None
        index = {c.id: i for i, c in enumerate(self.text.vocabulary.concepts)}
        return [{index[c] for c in self.sources.annotated(k)} for k in keys]

    def _validation_concepts(self, seg: torch.Tensor) -> torch.Tensor:
        """Main terms of the single-label concepts (present ones first when there are too many)."""
        cand = self.val_concepts
        if len(cand) <= self.max_val_prompts:
            return torch.tensor([cand] * seg.shape[0], dtype=torch.long)
        rows = []
        for b in range(seg.shape[0]):
            present = set(self.prompt_sampler.present_concepts(set(torch.unique(seg[b]).tolist())))
            order = sorted(cand, key=lambda c: (c not in present, np.random.random()))
            rows.append(order[: self.max_val_prompts])
        return torch.tensor(rows, dtype=torch.long)

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
        """Loss and per-concept tp/fp/fn of each single-label concept's main term (nnU-Net's pseudo Dice).

        Not nnU-Net's step: its counts are per output channel, while here the channels are prompt slots
        that hold different concepts in every batch, so the counts are scattered onto concepts."""
        data, target = self._to_device(batch)
        data, text, target, concepts = self.prompt_batch(batch, data, target, training=False)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            output = self.network(data, text)
            loss = self.loss(output, target)
        if self.enable_deep_supervision:
            output, target = output[0], target[0]
        pred = (output > 0).float()  # sigmoid(x) > 0.5
        axes = tuple(range(2, output.ndim))
        per_slot = [(pred * target).sum(axes), (pred * (1 - target)).sum(axes), ((1 - pred) * target).sum(axes)]
        annotated = self.annotated_concepts(batch["keys"])
        if annotated is not None:  # a concept the case's source leaves unlabelled is not scored there
            keep = torch.tensor([[c in a for c in row] for a, row in zip(annotated, concepts.tolist())],
                                device=concepts.device, dtype=per_slot[0].dtype)
            per_slot = [v * keep for v in per_slot]
        n_concepts = len(self.text.vocabulary.concepts)
        sums = []
        for v in per_slot:  # scatter (B, N) slot counts into per-concept counts
            acc = torch.zeros(n_concepts, device=v.device, dtype=torch.float64)
            acc.index_add_(0, concepts.flatten(), v.flatten().double())
            sums.append(acc[self.val_concepts].cpu().numpy())
        return {"loss": loss.detach().cpu().numpy(), "tp_hard": sums[0], "fp_hard": sums[1], "fn_hard": sums[2]}

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
        names = [self.text.vocabulary.concepts[i].main for i in self.val_concepts]
        self.print_to_log_file(f"pseudo Dice is reported per concept, in this order: {names}")

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

    # ------------------------------------------------------------------ final validation
    def perform_actual_validation(self, save_probabilities: bool = False):
        """Predict the validation cases with each single-label concept's main term (the text predictor) and
        report per-concept Dice in ``validation/summary.json``."""
        from nnunetv2_text.inference.validation import validate_trainer

        validate_trainer(self, save_probabilities)
