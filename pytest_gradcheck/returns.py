"""What a value-and-gradient function returns, read: the loss (one real number) and the
gradients, wherever the common layouts put them (`read`), and the small readers the other
loss-shaped adapters share (`scalar`, `describe`). Whose gradients they are is the adapters'
business (`valuegrad`, `pairs`, `shapes`, `backprop`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import GradcheckUsageError


def scalar(value: Any) -> np.ndarray | None:
    """`value` as a 0-d real float array (its own precision kept), or None if it is not one
    real number."""
    arr = np.asarray(value) if isinstance(value, (np.ndarray, np.generic)) else None
    if arr is None:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return np.array(float(value))
        return None
    if arr.ndim != 0 or not (np.issubdtype(arr.dtype, np.floating)
                             or np.issubdtype(arr.dtype, np.integer)):
        return None
    return arr if np.issubdtype(arr.dtype, np.floating) else arr.astype(np.float64)


def describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    if isinstance(value, tuple):
        return f"a tuple of {len(value)}"
    return f"a {type(value).__name__}"


class Trailing(tuple):  # type: ignore[type-arg]
    """Values returned beside the loss, one after another (`loss, dWxh, ..., dby, hs[-1]`):
    the gradients first, in the order of what they belong to, then values that are no
    gradient. `start` is the position of the first of them in what was returned."""

    start = 0


@dataclass(frozen=True)
class Reading:
    """The loss, the gradients as returned (one structure, or `Trailing` values), and how a
    longer tuple was read when values were left out (a note for the report)."""

    loss: np.ndarray
    grads: Any
    note: str | None = None


def read(res: Any, label: str, grad_positions: Sequence[int] | None) -> Reading:
    """(loss, gradients) from what the function returned: `(loss, grads)`, or
    `(grads, loss)` where the gradients (a dict, tuple or list) come first; for more
    values, `_long`; with `grads=`, `_at_positions`."""
    if grad_positions is not None:
        return _at_positions(res, label, list(grad_positions))
    if isinstance(res, (tuple, list)) and len(res) > 2:
        return _long(res, label)
    if (isinstance(res, (tuple, list)) and len(res) == 2 and scalar(res[0]) is None
            and isinstance(res[0], (dict, tuple, list)) and scalar(res[1]) is not None):
        return Reading(scalar(res[1]), res[0])  # type: ignore[arg-type]
    if not (isinstance(res, (tuple, list)) and len(res) == 2):
        raise GradcheckUsageError(
            f"{label}: a function is checked as a value-and-gradient function and "
            f"must return (loss, gradients), or the loss and the gradients one after another "
            f"(loss, dw1, dw2, ...); it returned {describe(res)}. For a layer pass an object "
            "with forward() and backward(); for a cs231n-style pair pass "
            "(forward_fn, backward_fn)"
        )
    loss = scalar(res[0])
    if loss is None:
        if isinstance(res[0], np.ndarray) and scalar(res[1]) is None:
            hint = (" for a function returning (out, cache) pass the pair "
                    "(forward_fn, backward_fn)")
        else:
            hint = " return (loss, gradients) or (gradients, loss)"
        raise GradcheckUsageError(
            f"{label}: the loss (first value returned) must be one real number, got "
            f"{describe(res[0])};{hint}"
        )
    return Reading(loss, res[1])

def _long(res: Sequence[Any], label: str) -> Reading:
    """More than two values: the loss is the first or, failing that, the last one real
    number; after it (or before it) either one gradient structure (a dict, tuple or list)
    followed by other values, or the gradients one after another (`Trailing`), matched to
    what they belong to by position, with the values left over reported."""
    n = len(res)
    first, last = scalar(res[0]), scalar(res[-1])
    if first is not None:
        loss, rest, start = first, res[1:], 1
    elif last is not None:
        loss, rest, start = last, res[:-1], 0
    else:
        raise GradcheckUsageError(
            f"{label}: returned a tuple of {n}, and neither its first nor its last "
            f"value is one real number to take as the loss (they are {describe(res[0])} and "
            f"{describe(res[-1])}); return the loss first or last, and, if the gradients "
            "are not the values right after (or before) it, pass grads=[their positions]"
        )
    if isinstance(rest[0], (dict, tuple, list)):
        return Reading(loss, rest[0])
    values = Trailing(rest)
    values.start = start
    return Reading(loss, values)

def _at_positions(res: Any, label: str, given: list[int]) -> Reading:
    """`grads=[positions]`: the gradients are there, in the order of what they belong
    to; the loss is the first or last of the other values."""
    if not isinstance(res, (tuple, list)):
        raise GradcheckUsageError(
            f"{label}: grads={given!r} gives positions in the tuple the function "
            f"returns, and it returned {describe(res)}"
        )
    n = len(res)
    bad = [p for p in given if not -n <= p < n]
    pos = [p % n for p in given if -n <= p < n]
    if bad or len(set(pos)) != len(pos):
        raise GradcheckUsageError(
            f"{label}: grads={given!r}: the function returned {n} values (positions "
            f"0 to {n - 1}); name each gradient's position once"
        )
    rest = [i for i in range(n) if i not in pos]
    at = next((i for i in rest[:1] + rest[-1:] if scalar(res[i]) is not None), None)
    if at is None:
        raise GradcheckUsageError(
            f"{label}: grads={given!r} leaves positions {rest} for the loss, and "
            "neither the first nor the last of them is one real number; return the loss "
            "first or last"
        )
    extra = [i for i in rest if i != at]
    note = None
    if extra:
        left = ", ".join(f"position {i} ({describe(res[i])})" for i in extra)
        note = (f"returned {n} values: the loss at position {at}, the gradients at "
                f"{', '.join(map(str, pos))}, and {left} left out of the check (grads=)")
    grads = res[pos[0]] if len(pos) == 1 else tuple(res[i] for i in pos)
    return Reading(scalar(res[at]), grads, note)  # type: ignore[arg-type]
