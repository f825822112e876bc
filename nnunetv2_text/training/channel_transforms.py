"""Apply an nnU-Net (batchgeneratorsv2) image transform to some input channels only.

nnU-Net's intensity augmentations (noise, blur, brightness, contrast, low resolution, gamma) act on
every input channel; on binary shape channels they would turn masks into noise. Wrapping them keeps
them for the image and leaves the other channels untouched.
"""
from __future__ import annotations

from typing import Sequence

from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
from batchgeneratorsv2.transforms.intensity.contrast import ContrastTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform

INTENSITY_TRANSFORMS = (GaussianNoiseTransform, GaussianBlurTransform, MultiplicativeBrightnessTransform,
                        ContrastTransform, SimulateLowResolutionTransform, GammaTransform)


def is_intensity_transform(t: BasicTransform) -> bool:
    return isinstance(t, INTENSITY_TRANSFORMS)


class OnlyChannels(BasicTransform):
    def __init__(self, transform: BasicTransform, channels: Sequence[int]):
        super().__init__()
        self.transform, self.channels = transform, list(channels)

    def __call__(self, **data_dict) -> dict:
        image = data_dict.get("image")
        if image is None or not self.channels:
            return data_dict
        sub = self.transform(image=image[self.channels].clone())["image"]
        image = image.clone()
        image[self.channels] = sub.to(image.dtype)
        data_dict["image"] = image
        return data_dict

    def __repr__(self) -> str:
        return f"OnlyChannels({self.channels}, {self.transform!r})"
