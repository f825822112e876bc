"""Python API: segment what prompts name in one image, from arrays or files.

>>> seg = TextSegmenter("/results/Dataset990_TextToy/TextFusionTrainer__nnUNetResEncUNetMPlans__3d_fullres",
...                     folds=(0,), device="cpu")
>>> masks = seg.predict("case_0000.nii.gz", ["ball", "round blob"])   # {prompt: uint8 mask (z, y, x)}

A CoWTalk refinement model answers instructions instead (:meth:`TextSegmenter.refine`).

Preprocessing follows the model's plans (the same preprocessor class nnU-Net uses), so CT stays CT.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from nnunetv2_text.errors import UserInputError
from nnunetv2_text.inference.export import answer_prompts, logits_to_masks, presence_scores, prompt_record
from nnunetv2_text.inference.plan import CasePrompts, Understanding, expand_all, plan_prompts
from nnunetv2_text.inference.predictor import TextPredictor, check_model_folder
from nnunetv2_text.inference.prompt_file import DEFAULT_MIN_MARGIN, DEFAULT_MIN_SIMILARITY
from nnunetv2_text.utils.orientation import to_storage_layout

ImageLike = Union[str, Path, Sequence[Union[str, Path]], np.ndarray]


class TextSegmenter:
    """One loaded model answering prompts (or, for a refinement model, instructions) image by image.

    ``progress(done, total)`` is called after every sliding-window tile (all folds counted): a program
    that shows progress, such as the napari widget, gets it without reading nnU-Net's tqdm output."""

    def __init__(self, model_folder: Union[str, Path], folds: Optional[Sequence[Union[int, str]]] = None,
                 checkpoint: str = "checkpoint_final.pth", device: str = "cuda", use_mirroring: bool = True,
                 step_size: float = 0.5, prompt_batch_size: int = 0,
                 progress: Optional[Callable[[int, int], None]] = None):
        dev = torch.device(device)
        self.predictor = TextPredictor(tile_step_size=step_size, use_mirroring=use_mirroring,
                                       perform_everything_on_device=dev.type == "cuda", device=dev,
                                       allow_tqdm=False, prompt_batch_size=prompt_batch_size)
        self.predictor.initialize_from_trained_model_folder(str(model_folder), folds, checkpoint)
        self.predictor.tile_progress = progress

    @staticmethod
    def inspect_folder(model_folder: Union[str, Path]) -> Dict[str, object]:
        """``{"refiner": bool, "channels": int}`` of a model folder, read from its dataset.json without loading
        the model, so that a user interface can ask for the right inputs first; an error for a folder that
        holds no trained model."""
        dataset_json = check_model_folder(Path(model_folder))
        return {"refiner": "cowtalk" in dataset_json, "channels": len(dataset_json.get("channel_names") or {0: 0})}

    @property
    def is_refiner(self) -> bool:
        """A CoWTalk refinement model: it edits a given shape by instructions (:meth:`refine`), not prompts."""
        return "cowtalk" in self.predictor.dataset_json

    def _load(self, image: ImageLike, spacing: Optional[Sequence[float]]):
        p = self.predictor
        if isinstance(image, np.ndarray):
            if spacing is None:
                raise UserInputError("an array needs its spacing (in array axis order, as SimpleITK's reversed)")
            data = image.astype(np.float32)
            if data.ndim == 3:
                data = data[None]
            sp = [float(s) for s in spacing]
            # a plain array has no header: identity direction, so position prompts still have a geometry
            return data, {"spacing": sp, "sitk_stuff": {"spacing": sp[::-1], "origin": (0.0, 0.0, 0.0),
                                                         "direction": (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)}}
        files = [str(image)] if isinstance(image, (str, Path)) else [str(f) for f in image]
        for f in files:
            if not Path(f).is_file():
                raise UserInputError(f"{f}: image not found")
        return p.plans_manager.image_reader_writer_class().read_images(files)

    def understand(self, prompts: Sequence[str], min_similarity: float = DEFAULT_MIN_SIMILARITY,
                   min_margin: float = DEFAULT_MIN_MARGIN) -> Dict[str, dict]:
        """{prompt: {"concept", "term", "similarity", "foreign_term", "foreign_similarity", "margin", "side",
        "known", "unknown_because"}}: what the model makes of each prompt (:meth:`TextPredictor.understand`), as
        recorded in the prediction manifest; no image needed."""
        prompts = self._check_prompts(prompts)
        return self.predictor.understand(prompts, self.predictor.embed_prompts(prompts), min_similarity,
                                         min_margin=min_margin)

    @staticmethod
    def _check_prompts(prompts: Sequence[str]) -> List[str]:
        prompts = list(dict.fromkeys(prompts))
        if not prompts or any(not isinstance(q, str) or not q.strip() for q in prompts):
            raise UserInputError(f"prompts must be non-empty strings, got {prompts!r}")
        return prompts

    def predict(self, image: ImageLike, prompts: Sequence[str], spacing: Optional[Sequence[float]] = None,
                return_probabilities: bool = False, return_info: bool = False, **understanding):
        """{prompt: uint8 mask in the input's array layout} (or float16 probabilities).

        A file is read with the model's reader (reoriented if the model is) and its masks are returned in
        the file's own voxel layout, as ``sitk.GetArrayFromImage`` gives it. An array is taken as stored
        (z, y, x) with an identity direction, so position prompts take its last axis as the patient's
        right-to-left. Position prompts ("the largest structure", :mod:`.positions`) work as in
        ``nnUNetv2_text_predict``, and ``all`` stands for every single-label concept of the model.

        With ``return_info`` also ``{prompt: {...}}``, the manifest's record of each prompt (what it was
        understood as, presence, flag, and for a position prompt how its concept was chosen).
        ``understanding``: ``on_unknown``, ``min_similarity``, ``min_margin`` and ``wording``, as
        ``nnUNetv2_text_predict``'s flags of those names (:class:`~.plan.Understanding`); the prompts are
        understood by the same :func:`~.plan.plan_prompts` as the command's."""
        p = self.predictor
        prompts = expand_all(self._check_prompts(prompts), p.vocabulary)
        plan = plan_prompts(p, prompts, Understanding(**understanding))
        case = plan.for_case(prompts)
        data, props = self._load(image, spacing)
        if data.shape[0] != p.num_input_channels:
            raise UserInputError(f"image has {data.shape[0]} channel(s), the model needs {p.num_input_channels}")
        pre = p.configuration_manager.preprocessor_class(verbose=False)
        data, _, props = pre.run_case_npy(data, None, props, p.plans_manager, p.configuration_manager,
                                          p.dataset_json)
        logits = p.predict_case_logits(torch.from_numpy(data).float(), plan.embeddings_for(case))
        masks, probs = logits_to_masks(logits, props, p.plans_manager, p.configuration_manager,
                                       return_probabilities)
        return self._answers(case, masks, probs if return_probabilities else masks,
                             presence_scores(logits.numpy()), props, return_info)

    @staticmethod
    def _answers(case: CasePrompts, masks: np.ndarray, values: np.ndarray, presence: np.ndarray, props: dict,
                 return_info: bool):
        """{prompt: mask or probabilities in the storage layout} [, {prompt: the manifest's record}]."""
        answers = answer_prompts(masks, case, props)
        result, info = {}, {}
        voxel_ml = float(np.prod(props["spacing"])) / 1000.0
        for q in case.prompts:
            i, why = answers[q]
            empty = i is None or q in case.blank
            out = np.zeros(values.shape[1:], values.dtype) if empty else values[i]
            result[q] = to_storage_layout(out, props)
            if return_info:
                voxels = 0 if empty else int(masks[i].sum())
                rec = prompt_record(q, voxels, voxel_ml, 0.0 if i is None else float(presence[i]),
                                    case.understood.get(q), q in case.blank, why)
                info[q] = {**(rec["understood"] or {}), **{k: rec[k] for k in ("presence", "flag", "voxels")},
                           **({"position": why} if why is not None else {})}
        return (result, info) if return_info else result

    def refine(self, files: Sequence[Union[str, Path]], instructions: Union[str, Sequence[str]], rounds: int = 1,
               edit_scope: str = "named") -> List[np.ndarray]:
        """A refinement model's label maps, one per round, in the files' voxel layout and the dataset's label ids.

        ``files``: the model's channels (the image, then the shape's binary channels, nnU-Net's naming);
        ``instructions``: one instruction repeated ``rounds`` times, or a list, one round each, as
        ``nnUNetv2_text_predict --instructions`` runs them (:class:`~.refine.Refiner`)."""
        from nnunetv2_text.inference.prompt_file import instruction_steps
        from nnunetv2_text.inference.refine import Refiner

        refiner = Refiner(self.predictor, edit_scope)
        steps = instruction_steps({"*": instructions if isinstance(instructions, str) else list(instructions)},
                                  "image", rounds)
        if not steps:
            raise UserInputError("give an instruction")
        refiner.check_instructions("image", steps)
        data, _ = self._load([str(f) for f in files], None)
        if data.shape[0] != self.predictor.num_input_channels:
            raise UserInputError(f"{len(files)} channel file(s), the model needs {self.predictor.num_input_channels} "
                                 "(the image, then the shape's channels)")
        refiner.check_shapes("image", [str(f) for f in files], data)
        outs, props, _ = refiner.refine([str(f) for f in files], steps)
        return [to_storage_layout(refiner.to_original_ids(seg), props) for seg, _ in outs]


def predict(image: ImageLike, prompts: Sequence[str], model_folder: Union[str, Path], **kwargs
            ) -> Dict[str, np.ndarray]:
    """One-shot convenience: ``predict(image_or_path, prompts, model_folder) -> {prompt: mask}``."""
    spacing = kwargs.pop("spacing", None)
    return TextSegmenter(model_folder, **kwargs).predict(image, prompts, spacing=spacing)
