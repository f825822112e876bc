"""Poisoned stand-in: importing the text encoder during training is a bug (see tests/conftest.py)."""
raise ImportError("sentence_transformers must not be imported during training: training reads only the embedding cache")
