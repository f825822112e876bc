"""CoWTalk: TopCoW vessel segmentations with synthetic errors and corrective instructions (docs/COWTALK.md).

Modules: ``constants`` (labels, channel order, label mapping), ``centerline`` (skeleton graph, spans,
cylinders), ``errors`` (apply an error from its parameters), ``sampling`` (seeded error choice),
``instructions`` (templates, instruction files), ``inputs`` (TopCoW discovery and validation),
``convert`` (the command), ``phantom`` (a synthetic TopCoW-like release for tests and demos).
"""
from .constants import (DATASET_LABELS, SHAPE_CHANNEL_ORDER, TOPCOW_LABELS, label_map_from_channels,
                        shape_channels, to_contiguous, to_topcow)
from .instructions import load_case_instructions, load_instruction_file, load_variants
from .phantom import write_phantom_topcow

__all__ = ["DATASET_LABELS", "SHAPE_CHANNEL_ORDER", "TOPCOW_LABELS", "label_map_from_channels", "shape_channels",
           "to_contiguous", "to_topcow", "load_case_instructions", "load_instruction_file", "load_variants",
           "write_phantom_topcow"]
