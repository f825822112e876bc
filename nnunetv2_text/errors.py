"""The one base class for mistakes in what a user gave us.

Every command catches :class:`UserInputError` and prints it as ``<prog>: error: <message>`` (argparse's
style, exit code 2); any other exception is a bug and keeps its traceback. Messages name the file,
case, label or prompt at fault, because the user has to find and fix it.
"""
from __future__ import annotations

import functools
import sys
from typing import Callable, List, Optional


class UserInputError(ValueError):
    """Bad input (file, case, label, prompt, option); raised before any output is written.

    A ``ValueError`` so that library callers who already catch ``ValueError`` keep working.
    """


def user_errors_to_exit(prog: str) -> Callable:
    """Decorate a ``main(argv) -> int``: a :class:`UserInputError` is printed like argparse prints a
    usage error (no traceback, exit code 2); every other exception propagates with its traceback.

    Lives beside the error class (not in ``run/``) so that dataset conversion, which the package never
    imports, maps errors the same way without reaching into the command layer."""

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
