"""Atomic file writes: a killed job must never leave a half-written file under its final name.

Every writer goes to a temporary file in the destination folder (same file system, so the final
``os.replace`` is atomic) and renames it only once the content is complete.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Union

PathLike = Union[str, os.PathLike]

#: temporary files carry this marker so that ``--continue_prediction`` and cleanup can recognise them
TMP_MARKER = ".nnunetv2_text_tmp"
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(final: PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``final``; rename it to ``final`` if the block succeeds.

    The temporary name keeps the full suffix of ``final`` (e.g. ``.nii.gz``) because writers such as
    SimpleITK pick the format from the file ending.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final.suffixes) if final.suffixes else ""
    stem = final.name[: len(final.name) - len(suffix)] if suffix else final.name
    fd, tmp = tempfile.mkstemp(prefix=f"{stem}{TMP_MARKER}_", suffix=suffix, dir=final.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_bytes(final: PathLike, data: bytes) -> None:
    with atomic_path(final) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(final: PathLike, text: str) -> None:
    atomic_write_bytes(final, text.encode("utf-8"))


def atomic_write_json(final: PathLike, obj: Any, indent: int = 2) -> None:
    atomic_write_text(final, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def atomic_write_with(final: PathLike, writer: Callable[[str], None]) -> None:
    """Call ``writer(tmp_path)`` and move the result to ``final`` atomically."""
    with atomic_path(final) as tmp:
        writer(tmp)


def is_temporary(path: PathLike) -> bool:
    return TMP_MARKER in Path(path).name


def existing_datasets(raw_root: PathLike, dataset_id: int) -> list:
    """Every ``DatasetXXX_*`` folder of this id under ``raw_root`` (nnU-Net refuses two datasets sharing an
    id; temporary build folders excluded)."""
    return sorted(p for p in Path(raw_root).glob(f"Dataset{dataset_id:03d}_*")
                  if p.is_dir() and TMP_MARKER not in p.name)


@contextlib.contextmanager
def atomic_folder(final: PathLike) -> Iterator[Path]:
    """Yield a hidden temporary folder beside ``final``; when the block succeeds, replace ``final`` by it.

    For folders built file by file (a converted dataset, an imported model): an interrupted build leaves
    no half folder under the final name. Whether an existing ``final`` may be replaced is the caller's
    decision, made before any work."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}{TMP_MARKER}_", dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_dataset_folder(raw_root: PathLike, dataset_id: int, name: str, overwrite: bool = False) -> Iterator[Path]:
    """Build a raw dataset in a hidden temporary folder and move it into place only when the block succeeds.

    nnU-Net lists only folders that start with ``Dataset``, so the hidden folder is never seen as a
    dataset; an interrupted or failed build leaves nothing. With ``overwrite`` the folders of the same
    id are replaced at the very end; without it an existing id is an error before anything is written.
    """
    from nnunetv2_text.errors import UserInputError

    raw_root = Path(raw_root)
    final = raw_root / f"Dataset{dataset_id:03d}_{name}"
    existing = existing_datasets(raw_root, dataset_id)
    if existing and not overwrite:
        raise UserInputError(f"dataset id {dataset_id} is already used by {existing[0]} (pass --overwrite to replace it)")
    raw_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}{TMP_MARKER}_", dir=raw_root))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)
        trash = Path(tempfile.mkdtemp(prefix=f".old{TMP_MARKER}_", dir=raw_root))
        for old in existing_datasets(raw_root, dataset_id):
            os.replace(old, trash / old.name)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
