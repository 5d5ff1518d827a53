"""The one error type that the CLI turns into a clean message and a non-zero exit."""

from __future__ import annotations


class MrlError(ValueError):
    """Bad input or configuration: the message names the file, line or value at fault."""


class LimitError(MrlError):
    """A request past a stated limit (stages of a cascade, work per request): the service answers 422."""
