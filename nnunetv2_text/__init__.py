"""nnunetv2_text: free-text promptable 3D segmentation for nnU-Net v2.

Layout: ``text`` (vocabularies, encoder, embedding cache), ``network`` (text-fused ResEnc UNet),
``training`` (nnU-Net trainers), ``inference`` (prompt files, predictor, outputs),
``evaluation`` (metrics and reports), ``run`` (thin command-line entry points).
"""
__version__ = "0.1.0"
