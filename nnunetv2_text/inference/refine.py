"""Instruction-guided refinement (CoWTalk models): one step or several, each output fed back as the shape.

A refinement model takes the image and the current shape (one binary channel per class) plus an
instruction, and returns a multi-class label map. Iterating feeds that map back as the new shape
channels: with a list of instruction chunks, one step per chunk (CoWTalk found splitting long
instructions helps); with ``iterations`` > 1 and one instruction, the same instruction repeatedly.
Every step's output is kept (``steps/<case>_step<k>.nii.gz``) and the last is also ``<case>.nii.gz``;
label ids are mapped back to the dataset's original convention (e.g. 13 -> 15 for TopCoW's 3rd-A2). The
rounds of a case share a state (:class:`Refiner`); an empty or no-change instruction returns the shape as
it is.

By default a round edits only what its instruction names (``edit_scope="named"``): the vessels that the
model's vocabulary finds in the instruction ("Widen the right ICA." names R-ICA). A voxel may leave a named
class (for background or another named class) or join a named class from background; every other change
the network proposes is discarded, and so are additions that float free of their vessel and removals that
cut a vessel in two (:func:`scoped_changes`), and a named vessel changes only the way its sentence's verb
says: "thicken", "extend", "reconnect" and "add" only grow it, "thin", "shorten" and "remove" only shrink
it (:meth:`Refiner.directions`). That keeps a correction where and as the instruction puts it: a
CoWTalk instruction always names its artery and its edit, and no CoWTalk correction draws an island or
splits a vessel. ``edit_scope="all"`` takes the network's proposal everywhere (the network alone, the benchmark's
control).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Set

import cc3d
import numpy as np
import torch
from scipy import ndimage
from scipy.special import log_softmax

from nnunetv2_text.errors import UserInputError
from nnunetv2_text.inference.prompt_file import instruction_steps
from nnunetv2_text.network.text_unet import unwrap_network
from nnunetv2_text.text.instructions import (EDITS, contiguous_id, contiguous_to_original, edit_directions,
                                             instruction_directions, is_no_change, original_to_contiguous,
                                             read_edits)
from nnunetv2_text.utils.io import atomic_path, atomic_write_json


EDIT_SCOPES = ("named", "all")


def _components(mask: np.ndarray) -> tuple:
    return cc3d.connected_components(mask, connectivity=26, return_N=True)


def scoped_changes(old: np.ndarray, proposed: np.ndarray, classes: Sequence[int],
                   directions: Optional[Mapping[int, Set[str]]] = None) -> np.ndarray:
    """Which voxels may take their proposed label when an instruction names ``classes`` (bool mask).

    Allowed: a voxel of a named class becomes background or another named class, and a background voxel
    becomes a named class. Within that, an edit keeps each named vessel's topology unless it joins pieces:
    voxels added to a class must be connected (26-neighbourhood) to what the class already has, or, for
    a class the shape lacks, to the shape's vessels; removals that would split a class into more pieces
    than it had are dropped. None of CoWTalk's corrections draws an island or cuts a vessel in two.
    ``directions`` (class -> {"grow", "shrink"}) limits a class to the ways its instruction asks for: a
    class that may only grow loses no voxel, one that may only shrink gains none.
    """
    named_now, named_before = np.isin(proposed, classes), np.isin(old, classes)
    accept = (proposed != old) & ((named_before & (named_now | (proposed == 0))) | ((old == 0) & named_now))
    for c, ways in (directions or {}).items():
        if "shrink" not in ways:
            accept &= ~((old == c) & (proposed != c))
        if "grow" not in ways:
            accept &= ~((proposed == c) & (old != c))
    for c in classes:
        before = old == c
        after = np.where(accept, proposed, old) == c
        components, _ = _components(after)
        anchors = (before & after) if before.any() else \
            after & ndimage.binary_dilation(old > 0, structure=np.ones((3, 3, 3), bool))
        anchored = np.isin(components, np.unique(components[anchors])) & after
        accept &= ~(after & ~before & ~anchored)
        after = np.where(accept, proposed, old) == c
        if _components(after)[1] > _components(before)[1]:
            accept &= ~(before & ~after)
    return accept


class Refiner:
    """Wraps a :class:`TextPredictor` holding a multi-class refinement model.

    A session of rounds keeps a state: the running log-probabilities of every class (in the input's
    layout). Each round's network sees the current shape (the state's argmax, as in training) and the
    round's instruction; its correction is its log-probabilities minus those of the shape prior alone (what
    an unchanged shape would give), and adds to the state. So a round builds on what earlier rounds were
    sure of instead of re-deciding every voxel from the hard map alone, and a round whose instruction asks
    for nothing (empty, or a no-change sentence) leaves the state and the shape exactly as they are.
    """

    def __init__(self, predictor, edit_scope: str = "named"):
        if edit_scope not in EDIT_SCOPES:
            raise UserInputError(f"edit scope '{edit_scope}': choose one of {', '.join(EDIT_SCOPES)}")
        if edit_scope == "named" and predictor.vocabulary is None:
            raise UserInputError("this refinement model carries no vocabulary to find the vessels an instruction "
                                 "names: use edit scope 'all'")
        self.p = predictor
        self.edit_scope = edit_scope
        ct = predictor.dataset_json.get("cowtalk")
        if ct is None or predictor.network_config.outputs_per_prompt < 2:
            raise UserInputError("not a refinement model: its dataset.json has no 'cowtalk' entry")
        if predictor.network_config.direction_channels and predictor.vocabulary is None:
            raise UserInputError("this refinement model reads which way each vessel moves through its vocabulary, "
                                 "and its checkpoint carries none: it was not saved by CoWTalkRefineTrainer")
        self.shape_channels = {int(ch): int(v) for ch, v in ct["shape_channels"].items()}  # channel -> original id
        self.to_original = contiguous_to_original(predictor.dataset_json)
        self.to_contiguous = original_to_contiguous(predictor.dataset_json)
        self.num_classes = predictor.network_config.outputs_per_prompt
        self.prior_logit = predictor.network_config.shape_prior_logit \
            if predictor.network_config.shape_prior_channels is not None else 0.0

    def named_classes(self, instruction: str) -> Optional[List[int]]:
        """The classes (contiguous ids) a round may edit; None when every class may change (scope 'all')."""
        if self.edit_scope == "all":
            return None
        return sorted({v for c in self.p.vocabulary.mentions(instruction) for v in c.labels})

    def directions(self, instruction: str) -> Dict[int, Set[str]]:
        """Class (contiguous id) -> the ways ("grow", "shrink") the instruction's verbs move it."""
        return edit_directions(instruction, self.p.vocabulary)

    def check_instructions(self, case: str, steps: Sequence[str]) -> None:
        """Every instruction that asks for an edit must say which (a verb :func:`read_edits` reads), and under
        scope 'named' name a vessel the model knows; refused before anything is written."""
        for k, instruction in enumerate(steps):
            if is_no_change(instruction):
                continue
            if self.named_classes(instruction) == []:
                raise UserInputError(
                    f"case '{case}', round {k + 1}: the instruction '{instruction}' names no vessel this model "
                    f"knows (for example '{self.p.vocabulary.concepts[0].main}'); name the vessel to edit, or "
                    "let the network edit every class with --edit_scope all")
            if not read_edits(instruction):
                raise UserInputError(
                    f"case '{case}', round {k + 1}: the instruction '{instruction}' asks for no edit this model "
                    f"reads; start it with what to do ({', '.join(EDITS)})")

    def check_shapes(self, case: str, files: Sequence[str], data: np.ndarray) -> None:
        """A shape channel must be binary: anything else is a user's mistake, named before any output."""
        for ch in self.shape_channels:
            values = np.unique(data[ch])
            if not np.isin(values, (0, 1)).all():
                raise UserInputError(f"case '{case}': shape channel {ch} ({files[ch]}) is not binary "
                                     f"(values {values[:5].tolist()}{' ...' if len(values) > 5 else ''})")

    def shape_of(self, data: np.ndarray) -> np.ndarray:
        """The label map (contiguous ids) that the shape channels hold."""
        seg = np.zeros(data.shape[1:], np.uint8 if self.num_classes < 256 else np.uint16)
        for ch, original in sorted(self.shape_channels.items()):
            seg[(data[ch] > 0.5) & (seg == 0)] = contiguous_id(self.to_contiguous, original)
        return seg

    def prior_logits(self, seg: np.ndarray) -> np.ndarray:
        """The network's shape prior for this label map: ``shape_prior_logit`` on each voxel's class."""
        logits = np.zeros((self.num_classes,) + seg.shape, np.float32)
        np.put_along_axis(logits, seg[None].astype(np.int64), self.prior_logit, 0)
        return logits

    def prior_log_probs(self, seg: np.ndarray) -> np.ndarray:
        """log softmax of the network's shape prior for this label map (zero correction)."""
        return log_softmax(self.prior_logits(seg), axis=0)

    def step(self, data: np.ndarray, props: dict, instruction: str, seg: np.ndarray) -> np.ndarray:
        """One refinement: raw channels (C, *spatial) and their label map ``seg`` -> the network's
        log-probabilities (K, *spatial) in the input layout.

        The network's output is the shape prior of its (preprocessed) input plus a learned correction. Only
        the correction is taken back to the input's geometry (nnU-Net's export, as softmax of the correction);
        the prior is rebuilt there from ``seg``. Resampling the whole output instead moved the boundaries of
        thin vessels that no instruction touched: a refiner with zero correction changed 35-116 voxels of a
        phantom case (mean class Dice 0.977-0.994 against its input)."""
        from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

        p = self.p
        pre = p.configuration_manager.preprocessor_class(verbose=False)
        d, _, pprops = pre.run_case_npy(data.copy(), None, dict(props), p.plans_manager, p.configuration_manager,
                                        p.dataset_json)
        x = torch.from_numpy(d).float()
        directions = (instruction_directions([instruction], p.vocabulary, self.num_classes)
                      if p.network_config.direction_channels else None)
        logits = p.predict_case_logits(x, p.embed_prompts([instruction]), directions)
        if p.network_config.shape_prior_channels is not None:
            with torch.no_grad():
                logits = logits - unwrap_network(p.network).shape_prior(x[None])[0].to(logits.dtype)
        lm = p.plans_manager.get_label_manager(p.dataset_json)
        _, correction = convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, p.plans_manager, p.configuration_manager, lm, pprops, return_probabilities=True)
        return log_softmax(self.prior_logits(seg) + np.log(np.clip(correction, 1e-6, None)), axis=0)

    def feed_back(self, data: np.ndarray, seg: np.ndarray) -> np.ndarray:
        out = data.copy()
        for ch, original in self.shape_channels.items():
            out[ch] = (seg == contiguous_id(self.to_contiguous, original)).astype(data.dtype)
        return out

    def refine(self, files: Sequence[str], steps: Sequence[str]):
        """-> ([(label map, changed by this round?) per round], properties of the input images, the input
        label map); the shape channels are checked beforehand (:meth:`check_shapes`, as
        :func:`refine_folder` does for all cases)."""
        data, props = self.p.plans_manager.image_reader_writer_class().read_images(list(files))
        seg = given = self.shape_of(data)
        state = self.prior_log_probs(seg)
        outs = []
        for instruction in steps:
            if is_no_change(instruction):
                outs.append((seg, False))
                continue
            log_probs = self.step(data, props, instruction, seg).astype(np.float32)
            # this round's correction, relative to what the unchanged shape alone would give
            proposal = state + log_probs - self.prior_log_probs(seg)
            proposal -= proposal.max(0, keepdims=True)  # keep the running sum bounded; the argmax is unchanged
            classes = self.named_classes(instruction)
            if classes is None:
                state = proposal
            else:  # voxels whose proposed change lies outside the scope keep their state (and label)
                proposed = proposal.argmax(0)
                take = scoped_changes(seg, proposed, classes, self.directions(instruction)) | (proposed == seg)
                state = np.where(take[None], proposal, state)
            seg = state.argmax(0).astype(seg.dtype)
            outs.append((seg, True))
            data = self.feed_back(data, seg)
        return outs, props, given

    def to_original_ids(self, seg: np.ndarray) -> np.ndarray:
        out = seg.astype(np.uint16 if max(self.to_original.values(), default=0) > 255 else np.uint8)
        for k, v in self.to_original.items():
            out[seg == k] = v
        return out


def refine_folder(predictor, cases: Dict[str, List[str]], output_folder: Path, spec, iterations: int = 1,
                  max_rounds: int = 10, edit_scope: str = "named") -> dict:
    """Refine every case, one round per instruction, saving every round's label map; every case's rounds
    (count, and under scope 'named' the vessels they name) and shape channels are checked before anything
    is written."""
    refiner = Refiner(predictor, edit_scope)
    steps_of = {c: instruction_steps(spec, c, iterations) for c in cases}
    for case, steps in steps_of.items():
        if len(steps) > max_rounds:
            raise UserInputError(f"case '{case}': {len(steps)} instructions, more than --max_rounds {max_rounds}")
        refiner.check_instructions(case, steps)
    rw = predictor.plans_manager.image_reader_writer_class()
    for case, files in cases.items():
        refiner.check_shapes(case, files, rw.read_images(list(files))[0])
    ending = predictor.dataset_json["file_ending"]
    manifest = {"format": "nnunetv2_text.refinement", "version": 3, "edit_scope": edit_scope, "cases": {}}
    for case, files in cases.items():
        outs, props, previous = refiner.refine(files, steps_of[case])
        entry = []
        for k, ((seg, ran), instr) in enumerate(zip(outs, steps_of[case])):
            name = f"steps/{case}_step{k + 1}{ending}"
            with atomic_path(Path(output_folder) / name) as tmp:
                rw.write_seg(refiner.to_original_ids(seg), tmp, props)
            named = refiner.named_classes(instr)
            entry.append({"step": k + 1, "instruction": instr, "file": name, "network_ran": ran,
                          "edits": None if named is None else [refiner.to_original.get(c, c) for c in named],
                          "changed_voxels": int((seg != previous).sum())})
            previous = seg
        with atomic_path(Path(output_folder) / f"{case}{ending}") as tmp:
            rw.write_seg(refiner.to_original_ids(outs[-1][0]), tmp, props)
        manifest["cases"][case] = {"final": f"{case}{ending}", "steps": entry}
    atomic_write_json(Path(output_folder) / "refinement.json", manifest)
    return manifest
