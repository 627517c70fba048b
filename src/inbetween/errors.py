"""How an error reaches a user: one line, no traceback (the CLI prints it as ``inbetween: error: ...``)."""

from __future__ import annotations

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, NotADirectoryError)


def one_line(error: BaseException | str) -> str:
    """The message of ``error`` on one line (its type's name when it has none)."""
    text = " ".join(str(error).split())
    return text or (type(error).__name__ if isinstance(error, BaseException) else "")
