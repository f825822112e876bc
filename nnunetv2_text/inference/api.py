"""Python API: segment what prompts name in one image, from arrays or files.

>>> seg = TextSegmenter("/results/Dataset990_TextToy/TextFusionTrainer__nnUNetResEncUNetMPlans__3d_fullres",
...                     folds=(0,), device="cpu")
>>> masks = seg.predict("case_0000.nii.gz", ["ball", "round blob"])   # {prompt: uint8 mask (z, y, x)}

Preprocessing follows the model's plans (the same preprocessor class nnU-Net uses), so CT stays CT.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch

from nnunetv2_text.errors import UserInputError
from nnunetv2_text.inference.export import logits_to_masks
from nnunetv2_text.inference.predictor import TextPredictor

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

    def predict(self, image: ImageLike, prompts: Sequence[str], spacing: Optional[Sequence[float]] = None,
                return_probabilities: bool = False) -> Dict[str, np.ndarray]:
        """{prompt: uint8 mask in the input's array layout} (or float16 probabilities)."""
        p = self.predictor
        prompts = list(dict.fromkeys(prompts))
        if not prompts or any(not q.strip() for q in prompts):
            raise UserInputError(f"prompts must be non-empty strings, got {prompts!r}")
        data, props = self._load(image, spacing)
        if data.shape[0] != p.num_input_channels:
            raise UserInputError(f"image has {data.shape[0]} channel(s), the model needs {p.num_input_channels}")
        pre = p.configuration_manager.preprocessor_class(verbose=False)
        data, _, props = pre.run_case_npy(data, None, props, p.plans_manager, p.configuration_manager,
                                          p.dataset_json)
        logits = p.predict_case_logits(torch.from_numpy(data).float(), p.embed_prompts(prompts))
        masks, probs = logits_to_masks(logits, props, p.plans_manager, p.configuration_manager,
                                       return_probabilities)
        out = probs if return_probabilities else masks
        return {q: out[i] for i, q in enumerate(prompts)}


def predict(image: ImageLike, prompts: Sequence[str], model_folder: Union[str, Path], **kwargs
            ) -> Dict[str, np.ndarray]:
    """One-shot convenience: ``predict(image_or_path, prompts, model_folder) -> {prompt: mask}``."""
    spacing = kwargs.pop("spacing", None)
    return TextSegmenter(model_folder, **kwargs).predict(image, prompts, spacing=spacing)
