"""Predicting at each image's own spacing, as VoxTell does (crop to non-zero and z-score, no resampling).

nnU-Net resamples every case to the plans' spacing. A model imported from VoxTell was trained without
that, so its plans name ``NativeSpacingPreprocessor`` and the predictor swaps in this subclass of
nnU-Net's ``DefaultPreprocessor``: the same cropping and normalisation, with the target spacing set to
the case's own (nnU-Net's resampling then returns the data unchanged). nnU-Net only finds preprocessors
inside its own package, hence the configuration manager that knows this one.
"""
from __future__ import annotations

from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

NATIVE_SPACING_PREPROCESSOR = "NativeSpacingPreprocessor"


class NativeSpacingPreprocessor(DefaultPreprocessor):
    def run_case_npy(self, data, seg, properties: dict, plans_manager, configuration_manager, dataset_json):
        own = [properties["spacing"][i] for i in plans_manager.transpose_forward]
        at_own = ConfigurationManager({**configuration_manager.configuration, "spacing": own})
        return super().run_case_npy(data, seg, properties, plans_manager, at_own, dataset_json)


class TextConfigurationManager(ConfigurationManager):
    """nnU-Net's configuration manager, which also resolves :class:`NativeSpacingPreprocessor` (picklable,
    so nnU-Net's preprocessing workers get it too)."""

    @property
    def preprocessor_class(self):
        if self.preprocessor_name == NATIVE_SPACING_PREPROCESSOR:
            return NativeSpacingPreprocessor
        return super().preprocessor_class
