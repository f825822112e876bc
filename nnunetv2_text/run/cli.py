"""What every command does the same way: user mistakes become ``<prog>: error: ...`` and exit code 2.

The mapping itself lives in :mod:`nnunetv2_text.errors`; the commands import it from here."""
from __future__ import annotations

from nnunetv2_text.errors import user_errors_to_exit

__all__ = ["user_errors_to_exit"]
