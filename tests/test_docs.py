"""The docs name only trainers that exist: a command copied from them runs today."""
import importlib.util
import inspect
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRAINER = re.compile(r"\b((?:TextFusionTrainer|CoWTalkRefineTrainer|nnUNetTrainer)\w*)")
#: every folder nnU-Net may find trainers in here: the product's, the benchmarks' and the tests' own
TRAINER_MODULES = [ROOT / "nnunetv2_text" / "training" / "ext_trainers" / "nnunetv2_text_trainers.py",
                   *sorted((ROOT / "benchmarks" / "ext_trainers").glob("*.py")),
                   *sorted((ROOT / "tests" / "ext_trainers").glob("*.py"))]


def _classes(path: Path) -> set:
    spec = importlib.util.spec_from_file_location(f"_docs_check_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {name for name, obj in vars(module).items() if inspect.isclass(obj)}


def _documents() -> list:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "vocab").glob("*.md")),
            *sorted((ROOT / "benchmarks").glob("*.py")), *sorted((ROOT / "benchmarks").glob("*.sh"))]


def test_every_trainer_named_in_the_docs_exists():
    known = set().union(*(_classes(p) for p in TRAINER_MODULES))
    assert {"TextFusionTrainer", "TextFusionTrainer_demo", "nnUNetTrainer_noLRMirror_atlasCPU"} <= known
    missing = {}
    for doc in _documents():
        text = doc.read_text(encoding="utf-8")
        for name in TRAINER.findall(text):
            name = name.split("__")[0]  # a results folder is named Trainer__Plans__configuration
            if name not in known:
                missing.setdefault(name, []).append(doc.relative_to(ROOT).as_posix())
    assert not missing, f"trainers named in the docs that do not exist: {missing}"


def test_benchmark_only_variants_are_not_in_the_product():
    product = _classes(TRAINER_MODULES[0])
    assert "TextFusionTrainer_demo" in product and "TextFusionTrainer_light" in product
    assert not {"TextFusionTrainer_demo32epochs", "TextFusionTrainer_demoNoPartialLabels",
                "TextFusionTrainer_atlasCPU"} & product
