"""Atomic file writes: a killed job must never leave a half-written file under its final name.

Every writer goes to a temporary file in the destination folder (same file system, so the final
``os.replace`` is atomic) and renames it only once the content is complete.
"""
from __future__ import annotations

import contextlib
import json
import os
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
