"""TextFusionTrainer: nnU-Net training of the text-promptable ResEnc UNet, where a prompt names a structure.

On top of :class:`~nnunetv2_text.training.base.TextTrainerBase` (text, network, laterality, checkpoints),
this trainer decides what the prompts are and how they are scored:

- every sample gets ``num_positive_prompts`` present and ``num_negative_prompts`` absent concepts, and
  sometimes a prompt that names nothing the dataset labels, in place of an absent one or added
  (:mod:`.prompts`); the network gets their cached embeddings and returns one logit map per prompt;
- targets are binary per prompt (unions for combined concepts), loss is nnU-Net's Dice + BCE with its
  deep-supervision weights (optionally with a term for empty targets, :mod:`.loss`);
- pseudo Dice and the final validation are per concept (main terms of the single-label concepts);
- merged datasets prompt each case only with what its source annotates.

Tunables are class attributes, so a variant is a three-line subclass (see :mod:`.variants`).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast

from nnunetv2_text.network.config import names_another_decoder
from nnunetv2_text.text.dataset_text import text_folder
from nnunetv2_text.text.sources import SOURCES_FILE, load_sources
from nnunetv2_text.training.base import TextTrainerBase
from nnunetv2_text.training.loss import EmptyTargetLoss, prompt_dice_bce_loss
from nnunetv2_text.training.prompts import ConceptTargets, PromptSampler


class TextFusionTrainer(TextTrainerBase):
    # --- prompts ------------------------------------------------------------------------------------------
    #: present concepts per sample; None: by decoder, ``SHARED_DECODER_PROMPTS`` on the shared decoder (a
    #: prompt costs a read-out there; a smaller vocabulary gets each concept once) and 2 on a decoder run per
    #: prompt (a prompt costs a decoder)
    num_positive_prompts: Optional[int] = None
    #: the shared decoder's default: every concept of the vocabulary per sample, as plain nnU-Net's softmax
    #: teaches every label at every step (a prompt costs a read-out there, as a class costs plain nnU-Net a
    #: channel). On the atlas CPU preset, validation Dice after 2400 steps: 0.090 with 4 per sample, 0.585
    #: with 32, 0.643 with all 189 (plain nnU-Net with AdamW 0.667), at 2.9x the step time of 32
    #: (docs/DECISIONS.md). The bound keeps the per-prompt maps of a huge vocabulary (HCPEx's) in memory;
    #: 192 is the largest count measured, the AAL vocabulary's 189 fit
    SHARED_DECODER_PROMPTS = 192
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
    # --- decoder ------------------------------------------------------------------------------------------
    #: every decoder stage runs once per image and a prompt is a read-out per stage (the shared decoder),
    #: unless the variant names another design (fusion or light stages, a shape prior, VoxTell's). False:
    #: every stage per prompt, VoxTell's design and the default until the atlas benchmark chose this one
    #: (docs/DECISIONS.md). A checkpoint keeps the design it was trained with, whatever this says now
    shared_decoder: bool = True

    # ------------------------------------------------------------------ setup
    def initialize(self):
        super().initialize()
        self.prompt_sampler = PromptSampler(self.text.vocabulary, self.text.terms, self.positive_prompts(),
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

    def positive_prompts(self) -> int:
        """Present concepts per sample (``num_positive_prompts``, or the decoder's default)."""
        if self.num_positive_prompts is not None:
            return self.num_positive_prompts
        return self.SHARED_DECODER_PROMPTS if self.text_config.shared_decoder else 2

    def network_config_overrides(self) -> dict:
        overrides = super().network_config_overrides()
        if self.shared_decoder and "shared_decoder" not in overrides and not names_another_decoder(overrides):
            overrides["shared_decoder"] = True
        return overrides

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

    # ------------------------------------------------------------------ steps
    def prompt_batch(self, batch: dict, data: torch.Tensor, target, training: bool):
        """(data, text (B, N, dim), per-prompt targets like ``target``, concept ids (B, N)) for one batch:
        sampled concepts in training, the single-label concepts' main terms in validation."""
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

    def _log_validation_order(self) -> None:
        names = [self.text.vocabulary.concepts[i].main for i in self.val_concepts]
        self.print_to_log_file(f"pseudo Dice is reported per concept, in this order: {names}")

    # ------------------------------------------------------------------ final validation
    def perform_actual_validation(self, save_probabilities: bool = False):
        """Predict the validation cases with each single-label concept's main term (the text predictor) and
        report per-concept Dice in ``validation/summary.json``."""
        from nnunetv2_text.training.validation import validate_prompts

        validate_prompts(self, save_probabilities)
