"""Check options: names, defaults, validation; precedence ini < command line < marker < call."""

from __future__ import annotations

import difflib
import math
import numbers
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from .errors import GradcheckUsageError

MODES = ("full", "fast", "sample", "auto")

# Arrays up to this many elements are checked element by element in mode="auto"; larger ones
# along random directions with group testing (fast mode). At the limit full mode costs 4,096
# forward passes for the array, fast mode 2 per direction (plus ~2*log2(n) to locate an error).
AUTO_FULL_LIMIT = 2048
DEFAULT_SEED = 0


@dataclass(frozen=True)
class Options:
    """Everything that steers one check. `None` means: the default for the precision in use."""

    seed: int = DEFAULT_SEED
    eps: float | None = None
    rtol: float | None = None
    atol: float = 0.0
    params: tuple[str, ...] | None = None
    inputs: bool = True
    extra_loss: Callable[[Any], float] | None = None
    random_sources: tuple[Any, ...] = ()
    # auto: exactly full mode for arrays up to auto_limit elements (every test-sized layer, so
    # every classic bug is caught and mapped element by element), fast mode above, where full
    # mode would cost two forward passes per element.
    mode: str = "auto"
    samples: int = 16
    # One direction per array: its entries are +-(1+u), so any wrong element shows with at least
    # its full error and equal errors cannot cancel exactly; more directions only guard against
    # near-cancellation of several errors, at two forward passes each.
    directions: int = 1
    auto_limit: int = AUTO_FULL_LIMIT
    label: str | None = None

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def updated(self, values: Mapping[str, Any], source: str) -> Options:
        """A copy with `values` applied on top; `source` names where they came from for errors."""
        if not values:
            return self
        known = _NAMES
        unknown = [k for k in values if k not in known]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(k, known, n=1)
                hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise GradcheckUsageError(
                f"{source}: unknown gradcheck option {', '.join(hints)}; "
                f"known options: {', '.join(sorted(known))}"
            )
        clean = {k: _coerce(k, v, source) for k, v in values.items()}
        return replace(self, **clean)


_NAMES = frozenset(Options.names())


# numpy's global stream, reseeded with the check seed, takes seeds in [0, 2**32).
SEED_LIMIT = 2**32
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")
_STREAM_TYPES = (np.random.Generator, np.random.RandomState, np.random.BitGenerator, random.Random)


def _integer(value: Any, what: str) -> int:
    """An int from an int, an integral float or a decimal string; ValueError saying `what`."""
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    elif isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer()):
        return int(value)
    raise ValueError(f"must be {what}")


def _number(value: Any, what: str) -> float:
    """A finite float; ValueError saying `what` for anything else (nan and inf included)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"must be {what}") from None
    if not math.isfinite(v):
        raise ValueError(f"must be {what}")
    return v


def _is_stream(obj: Any) -> bool:
    return isinstance(obj, _STREAM_TYPES) or (
        callable(getattr(obj, "getstate", None)) and callable(getattr(obj, "setstate", None))
    )


def _coerce(name: str, value: Any, source: str) -> Any:
    """Validate one option value, turning strings from ini files and flags into real types."""
    try:
        if name == "seed":
            what = f"an integer between 0 and 2**32 - 1 ({SEED_LIMIT - 1})"
            v = _integer(value, what)
            if not 0 <= v < SEED_LIMIT:
                raise ValueError(f"must be {what}")
            return v
        if name in ("eps", "rtol"):
            if value is None:
                return None
            x = _number(value, "a finite number > 0")
            if not x > 0:
                raise ValueError("must be a finite number > 0")
            return x
        if name == "atol":
            x = _number(value, "a finite number >= 0")
            if x < 0:
                raise ValueError("must be a finite number >= 0")
            return x
        if name in ("samples", "directions", "auto_limit"):
            v = _integer(value, "an integer >= 1")
            if v < 1:
                raise ValueError("must be an integer >= 1")
            return v
        if name == "mode":
            if value not in MODES:
                raise ValueError(f"must be one of {', '.join(MODES)}")
            return value
        if name == "params":
            if value is None:
                return None
            if isinstance(value, str):
                return tuple(p for p in value.replace(",", " ").split() if p)
            if isinstance(value, Sequence):
                return tuple(str(p) for p in value)
            raise ValueError("must be a list of parameter names or glob patterns")
        if name == "inputs":
            if isinstance(value, str):
                word = value.strip().lower()
                if word not in TRUE_WORDS + FALSE_WORDS:
                    raise ValueError("must be true or false")
                return word in TRUE_WORDS
            return bool(value)
        if name == "extra_loss":
            if value is not None and not callable(value):
                raise ValueError("must be a callable taking the layer and returning a float")
            return value
        if name == "random_sources":
            if value is None:
                return ()
            sources = tuple(value) if isinstance(value, (list, tuple)) else (value,)
            bad = [type(s).__name__ for s in sources if not _is_stream(s)]
            if bad:
                raise ValueError(
                    "must be random streams (numpy Generator, RandomState or BitGenerator, "
                    "random.Random, or objects with getstate()/setstate()), got "
                    + ", ".join(bad)
                )
            return sources
        if name == "label":
            return None if value is None else str(value)
    except (TypeError, ValueError) as exc:
        raise GradcheckUsageError(f"{source}: option {name}={value!r} {exc}") from None
    return value
