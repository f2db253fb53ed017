"""Errors the CLI turns into one line and a documented exit code."""
from __future__ import annotations


FIELD_LIMIT = 120


def _printable(text: str) -> str:
    """Control characters (a newline in a key or a file name) escaped: an error stays one line."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class GpumixError(Exception):
    exit_code = 1


class InputError(GpumixError):
    """Bad input: names the file and the field. Exit code 2."""

    exit_code = 2

    def __init__(self, file: str, field: str, message: str):
        field = _printable(str(field))
        if len(field) > FIELD_LIMIT:  # a field path built from a huge key: quote at most ~100 characters
            field = field[:FIELD_LIMIT - 1] + "…"
        self.file, self.field, self.message = _printable(str(file)), field, _printable(str(message))
        super().__init__(f"{self.file}: {field}: {message}" if field else f"{self.file}: {message}")


class InfeasibleError(GpumixError):
    """Demand cannot be met by any allowed configuration. Exit code 3."""

    exit_code = 3


class NoSolutionError(GpumixError):
    """The solver found no plan within its time limit. Exit code 4."""

    exit_code = 4
