"""Python API: segment what prompts name in one image, from arrays or files.

>>> seg = TextSegmenter("/results/Dataset990_TextToy/TextFusionTrainer__nnUNetResEncUNetMPlans__3d_fullres",
...                     folds=(0,), device="cpu")
>>> masks = seg.predict("case_0000.nii.gz", ["ball", "round blob"])   # {prompt: uint8 mask (z, y, x)}

Preprocessing follows the model's plans (the same preprocessor class nnU-Net uses), so CT stays CT.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from nnunetv2_text.errors import UserInputError
from nnunetv2_text.inference.export import logits_to_masks, presence_scores, unknown_flag
from nnunetv2_text.inference.predictor import TextPredictor
from nnunetv2_text.inference.prompt_file import DEFAULT_MIN_SIMILARITY

ImageLike = Union[str, Path, Sequence[Union[str, Path]], np.ndarray]


class TextSegmenter:
    def __init__(self, model_folder: Union[str, Path], folds: Optional[Sequence[Union[int, str]]] = None,
                 checkpoint: str = "checkpoint_final.pth", device: str = "cuda", use_mirroring: bool = True,
                 step_size: float = 0.5, prompt_batch_size: int = 16):
        dev = torch.device(device)
        self.predictor = TextPredictor(tile_step_size=step_size, use_mirroring=use_mirroring,
                                       perform_everything_on_device=dev.type == "cuda", device=dev,
                                       allow_tqdm=False, prompt_batch_size=prompt_batch_size)
        self.predictor.initialize_from_trained_model_folder(str(model_folder), folds, checkpoint)

    def _load(self, image: ImageLike, spacing: Optional[Sequence[float]]):
        p = self.predictor
        if isinstance(image, np.ndarray):
            if spacing is None:
                raise UserInputError("an array needs its spacing (in array axis order, as SimpleITK's reversed)")
            data = image.astype(np.float32)
            if data.ndim == 3:
                data = data[None]
            return data, {"spacing": [float(s) for s in spacing]}
        files = [str(image)] if isinstance(image, (str, Path)) else [str(f) for f in image]
        for f in files:
            if not Path(f).is_file():
                raise UserInputError(f"{f}: image not found")
        return p.plans_manager.image_reader_writer_class().read_images(files)

    def understand(self, prompts: Sequence[str], min_similarity: float = DEFAULT_MIN_SIMILARITY) -> Dict[str, dict]:
        """{prompt: {"concept", "term", "similarity", "known"}}: what the model makes of each prompt (its
        nearest training term after centring), as recorded in the prediction manifest; no image needed."""
        prompts = self._check_prompts(prompts)
        return self.predictor.understand(prompts, self.predictor.embed_prompts(prompts), min_similarity)

    @staticmethod
    def _check_prompts(prompts: Sequence[str]) -> List[str]:
        prompts = list(dict.fromkeys(prompts))
        if not prompts or any(not isinstance(q, str) or not q.strip() for q in prompts):
            raise UserInputError(f"prompts must be non-empty strings, got {prompts!r}")
        return prompts

    def predict(self, image: ImageLike, prompts: Sequence[str], spacing: Optional[Sequence[float]] = None,
                return_probabilities: bool = False, return_info: bool = False,
                on_unknown: str = "warn", min_similarity: float = DEFAULT_MIN_SIMILARITY):
        """{prompt: uint8 mask in the input's array layout} (or float16 probabilities).

        With ``return_info`` also ``{prompt: {"concept", "term", "similarity", "presence", "flag"}}``, the
        manifest's record of what each prompt was understood as. ``on_unknown`` acts on prompts below
        ``min_similarity`` as ``nnUNetv2_text_predict --on_unknown`` does (warn, empty or error)."""
        p = self.predictor
        prompts = self._check_prompts(prompts)
        emb = p.embed_prompts(prompts)
        understood = p.understand(prompts, emb, min_similarity)
        blank = p.prompts_to_empty(understood, on_unknown, min_similarity)
        data, props = self._load(image, spacing)
        if data.shape[0] != p.num_input_channels:
            raise UserInputError(f"image has {data.shape[0]} channel(s), the model needs {p.num_input_channels}")
        pre = p.configuration_manager.preprocessor_class(verbose=False)
        data, _, props = pre.run_case_npy(data, None, props, p.plans_manager, p.configuration_manager,
                                          p.dataset_json)
        logits = p.predict_case_logits(torch.from_numpy(data).float(), emb)
        masks, probs = logits_to_masks(logits, props, p.plans_manager, p.configuration_manager,
                                       return_probabilities)
        out = probs if return_probabilities else masks
        for i, q in enumerate(prompts):
            if q in blank:
                out[i] = 0
        result = {q: out[i] for i, q in enumerate(prompts)}
        if not return_info:
            return result
        presence = presence_scores(logits.numpy())
        info = {q: {**{k: understood[q][k] for k in ("concept", "term", "similarity")},
                    "presence": round(float(presence[i]), 4),
                    "flag": unknown_flag(understood[q]["known"], q in blank)}
                for i, q in enumerate(prompts)}
        return result, info


def predict(image: ImageLike, prompts: Sequence[str], model_folder: Union[str, Path], **kwargs
            ) -> Dict[str, np.ndarray]:
    """One-shot convenience: ``predict(image_or_path, prompts, model_folder) -> {prompt: mask}``."""
    spacing = kwargs.pop("spacing", None)
    return TextSegmenter(model_folder, **kwargs).predict(image, prompts, spacing=spacing)
