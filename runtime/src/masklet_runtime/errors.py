"""The one error type the runtime raises for a bad export folder or bad input.

Its message is always one line, so a command-line tool can print it as is.
"""

from __future__ import annotations


class ExportError(ValueError):
    """An export folder that cannot be used: missing, from another format, or tampered with."""

    def __init__(self, message: str) -> None:
        # Callers print the message on one line: fold any newline a caller let through.
        super().__init__(" ".join(str(message).split()))
