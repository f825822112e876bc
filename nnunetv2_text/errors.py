"""The one base class for mistakes in what a user gave us.

Every command catches :class:`UserInputError` and prints it as ``<prog>: error: <message>`` (argparse's
style, exit code 2); any other exception is a bug and keeps its traceback. Messages name the file,
case, label or prompt at fault, because the user has to find and fix it.
"""
from __future__ import annotations


class UserInputError(ValueError):
    """Bad input (file, case, label, prompt, option); raised before any output is written.

    A ``ValueError`` so that library callers who already catch ``ValueError`` keep working.
    """
