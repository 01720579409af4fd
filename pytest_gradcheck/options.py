"""Check options: names, defaults, validation; precedence ini < command line < marker < call."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

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


def _coerce(name: str, value: Any, source: str) -> Any:
    """Validate one option value, turning strings from ini files and flags into real types."""
    try:
        if name == "seed":
            return int(value)
        if name in ("eps", "rtol"):
            if value is None:
                return None
            v = float(value)
            if not v > 0:
                raise ValueError("must be > 0")
            return v
        if name == "atol":
            v = float(value)
            if v < 0:
                raise ValueError("must be >= 0")
            return v
        if name in ("samples", "directions", "auto_limit"):
            v = int(value)
            if v < 1:
                raise ValueError("must be >= 1")
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
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if name == "extra_loss":
            if value is not None and not callable(value):
                raise ValueError("must be a callable taking the layer and returning a float")
            return value
        if name == "random_sources":
            return tuple(value) if isinstance(value, (list, tuple)) else (value,)
        if name == "label":
            return None if value is None else str(value)
    except (TypeError, ValueError) as exc:
        raise GradcheckUsageError(f"{source}: option {name}={value!r} {exc}") from None
    return value
