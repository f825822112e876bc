"""The docs stay usable: they name only trainers that exist (a command copied from them runs today) and
files that exist, README.md table cells stay short, and docs/README.md, the reading order, names every doc."""
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


README_CELL_LIMIT = 300  # characters: the details belong in docs/
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _prose(path: Path) -> str:
    """The file's text without fenced code blocks (a command there may look like a link)."""
    out, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line)
    return "\n".join(out)


def _cells(line: str) -> list:
    """A markdown table row's cells (``\\|`` is a pipe inside a cell)."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def test_readme_table_cells_are_short():
    long = [(c[:60] + "...", len(c)) for line in _prose(ROOT / "README.md").splitlines()
            if line.lstrip().startswith("|") for c in _cells(line) if len(c) > README_CELL_LIMIT]
    assert not long, f"README.md table cells over {README_CELL_LIMIT} characters (move the details to docs/): {long}"


def test_docs_readme_names_every_doc():
    index = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    docs = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.name != "README.md"]
    missing = [name for name in docs + ["results/"] if name not in index]
    assert not missing, f"docs/README.md (the reading order) does not name: {missing}"


def test_relative_links_point_to_existing_files():
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "vocab").glob("*.md"))]
    broken = []
    for doc in files:
        for target in LINK.findall(_prose(doc)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL (https:, mailto:) or an anchor in the same file
            path = target.split("#", 1)[0]
            if not (doc.parent / path).exists():
                broken.append(f"{doc.relative_to(ROOT).as_posix()}: {target}")
    assert not broken, f"links to files that do not exist: {broken}"
