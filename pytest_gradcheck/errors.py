"""Exceptions raised by checks."""

from __future__ import annotations


class GradcheckError(AssertionError):
    """A backward pass disagrees with finite differences; the message is the report table."""


class GradcheckUsageError(Exception):
    """The check could not be run as asked: bad options, an unusable layer, bad inputs.

    The message names the layer, the parameter and what to do. `label` is the layer's label
    when the error concerns one layer (the message then starts with it), else None: read it
    rather than parsing the message.
    """

    def __init__(self, message: str, *, label: str | None = None) -> None:
        super().__init__(message)
        # Kept in __dict__, which BaseException.__reduce__ carries through pickling (xdist).
        self.label = label


class NondeterministicLayerError(GradcheckUsageError):
    """Two forward passes from the same state disagreed: an unreset random source is in use."""
