"""Exceptions raised by checks."""

from __future__ import annotations


class GradcheckError(AssertionError):
    """A backward pass disagrees with finite differences; the message is the report table."""


class GradcheckUsageError(Exception):
    """The check could not be run as asked: bad options, an unusable layer, bad inputs.

    The message names the layer, the parameter and what to do.
    """


class NondeterministicLayerError(GradcheckUsageError):
    """Two forward passes from the same state disagreed: an unreset random source is in use."""
