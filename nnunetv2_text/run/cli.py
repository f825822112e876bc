"""What every command does the same way: user mistakes become ``<prog>: error: ...`` and exit code 2."""
from __future__ import annotations

import functools
import sys
from typing import Callable, List, Optional

from nnunetv2_text.errors import UserInputError


def user_errors_to_exit(prog: str) -> Callable:
    """Decorate a ``main(argv) -> int``: a :class:`UserInputError` is printed like argparse prints a
    usage error (no traceback, exit code 2); every other exception propagates with its traceback."""

    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(argv: Optional[List[str]] = None) -> int:
            try:
                return main(argv)
            except UserInputError as e:
                print(f"{prog}: error: {e}", file=sys.stderr)
                return 2
        return run

    return wrap
