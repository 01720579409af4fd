"""Check options: one declaration each; precedence ini < command line < marker < call.

Every field of `Options` is declared with `option(...)`: its default, the coercer that turns
strings from ini files and flags into real values and validates Python values, its help text and
the front ends besides Python that may set it (`Where`). The pytest options and ini keys
(plugin.py), the flags of `python -m pytest_gradcheck` (__main__.py) and the README's options
table (`markdown_table`) are all generated from these declarations (`OPTIONS`).
"""

from __future__ import annotations

import difflib
import enum
import math
import numbers
import random
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

import numpy as np

from .errors import GradcheckUsageError
from .numeric import PRECISION_DEFAULTS
from .pointers import PointedParams, pointed

T = TypeVar("T")
# A coercer returns the option's value or raises ValueError("must be ...") (TypeError also
# counts); `OptionSpec.coerced` turns that into a usage error naming the source and the option.
Coercer = Callable[[Any], T]

MODES = ("full", "fast", "sample", "auto")
SUMMARIES = ("short", "full")

# Arrays up to this many elements are checked element by element in mode="auto"; larger ones
# along random directions with group testing (fast mode). At the limit full mode costs 4,096
# forward passes for the array, fast mode 2 per direction (plus ~2*log2(n) to locate an error).
AUTO_FULL_LIMIT = 2048
DEFAULT_SEED = 0
# numpy's global stream, reseeded with the check seed, takes seeds in [0, 2**32).
SEED_LIMIT = 2**32
# In ini files and on command lines `seed=random` draws one seed for the run (`resolve_seed`).
RANDOM_SEED = "random"
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")
_STREAM_TYPES = (np.random.Generator, np.random.RandomState, np.random.BitGenerator, random.Random)


# -- coercers ----------------------------------------------------------------------------------


def integer(low: int, high: int | None = None, *, what: str | None = None) -> Coercer[int]:
    """An int in [low, high] from an int, an integral float or a decimal string."""
    what = what or (f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]")

    def coerce(value: Any) -> int:
        if isinstance(value, str):
            try:
                v = int(value.strip())
            except ValueError:
                raise ValueError(f"must be {what}") from None
        elif isinstance(value, numbers.Integral) or (
            isinstance(value, float) and value.is_integer()
        ):
            v = int(value)
        else:
            raise ValueError(f"must be {what}")
        if v < low or (high is not None and v > high):
            raise ValueError(f"must be {what}")
        return v

    return coerce


def finite(low: float, *, inclusive: bool) -> Coercer[float]:
    """A finite float above `low` (or at it, if `inclusive`); nan and inf are refused."""
    what = f"a finite number {'>=' if inclusive else '>'} {low:g}"

    def coerce(value: Any) -> float:
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"must be {what}") from None
        if not math.isfinite(v) or v < low or (v == low and not inclusive):
            raise ValueError(f"must be {what}")
        return v

    return coerce


def optional(coerce: Coercer[T]) -> Coercer[T | None]:
    """`coerce`, with None passed through (None: the default for the precision, or none)."""
    return lambda value: None if value is None else coerce(value)


def choice(*allowed: str) -> Coercer[str]:
    def coerce(value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return str(value)

    return coerce


def boolean(value: Any) -> bool:
    """A bool; strings must be a yes/no word (a typo must not read as False)."""
    if isinstance(value, str):
        word = value.strip().lower()
        if word not in TRUE_WORDS + FALSE_WORDS:
            raise ValueError("must be true or false")
        return word in TRUE_WORDS
    return bool(value)


def patterns(value: Any) -> tuple[str, ...]:
    """Names or glob patterns: a sequence, or one string separated by commas or spaces."""
    if isinstance(value, str):
        return tuple(p for p in value.replace(",", " ").split() if p)
    if isinstance(value, Sequence):
        return tuple(str(p) for p in value)
    raise ValueError("must be a list of parameter names or glob patterns")


def params_option(value: Any) -> tuple[str, ...] | PointedParams:
    """Names or glob patterns of the parameters to check, or pointers at weights outside the
    call: `{name: (container, key)}` or `[(container, key), ...]` (`pointers`)."""
    found = pointed(value)
    return found if found is not None else patterns(value)


def positions(value: Any) -> tuple[int | str, ...]:
    """Argument positions or names: one, or a sequence of them."""
    items = value if isinstance(value, (list, tuple)) else (value,)
    out: list[int | str] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (numbers.Integral, str)):
            raise ValueError("must be argument positions (int) or names (str), or a list of them")
        out.append(item if isinstance(item, str) else int(item))
    if not out:
        raise ValueError("must name at least one argument")
    return tuple(out)


def indices(value: Any) -> tuple[int, ...]:
    """Positions in a returned tuple: one int, or a sequence of them (negative ones count
    from the end)."""
    items = value if isinstance(value, (list, tuple, range)) else (value,)
    if not items or any(isinstance(i, bool) or not isinstance(i, numbers.Integral)
                        for i in items):
        raise ValueError("must be positions (int) in the returned tuple, or a list of them")
    return tuple(int(i) for i in items)


def function(what: str) -> Coercer[Callable[..., Any]]:
    def coerce(value: Any) -> Callable[..., Any]:
        if not callable(value):
            raise ValueError(f"must be {what}")
        return value  # type: ignore[no-any-return]

    return coerce


def _is_stream(obj: Any) -> bool:
    return isinstance(obj, _STREAM_TYPES) or (
        callable(getattr(obj, "getstate", None)) and callable(getattr(obj, "setstate", None))
    )


def streams(value: Any) -> tuple[Any, ...]:
    """One random stream or a list of them; None for none."""
    if value is None:
        return ()
    sources = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    bad = [type(s).__name__ for s in sources if not _is_stream(s)]
    if bad:
        raise ValueError(
            "must be random streams (numpy Generator, RandomState or BitGenerator, "
            "random.Random, or objects with getstate()/setstate()), got " + ", ".join(bad)
        )
    return sources


# -- declarations ------------------------------------------------------------------------------


class Where(enum.Flag):
    """Where an option may be set besides Python (`check()`, the fixture call, the marker)."""

    PYTHON = 0  # nowhere else
    INI = 1  # `gradcheck_<name>` in the ini file
    PYTEST = 2  # `--gradcheck-<name>` on the pytest command line
    CLI = 4  # `--<name>` of `python -m pytest_gradcheck`
    EVERYWHERE = INI | PYTEST | CLI


@dataclass(frozen=True)
class OptionSpec:
    """One option: everything the front ends, the flags' help and the README need."""

    name: str
    type: str  # what a value is, in words, for the README
    default: Any
    coerce: Coercer[Any]
    help: str  # markdown: backticks for code
    where: Where
    default_text: str  # the default in words (e.g. per precision, when `default` is None)

    @property
    def ini_key(self) -> str:
        return f"gradcheck_{self.name}"

    @property
    def pytest_flag(self) -> str:
        return "--gradcheck-" + self.name.replace("_", "-")

    @property
    def cli_flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def help_line(self) -> str:
        """The help text for a command line's --help (plain text, default appended)."""
        return f"{_plain(self.help)} (default: {_plain(self.default_text)})"

    def coerced(self, value: Any, source: str) -> Any:
        try:
            return self.coerce(value)
        except (TypeError, ValueError) as exc:
            raise GradcheckUsageError(f"{source}: option {self.name}={value!r} {exc}") from None


_SPEC = "gradcheck_option"


def option(
    default: T,
    coerce: Coercer[T],
    type: str,
    help: str,
    *,
    where: Where = Where.PYTHON,
    default_text: str = "",
) -> T:
    """Declare a field of `Options` (the field's name is the option's name)."""
    spec = OptionSpec("", type, default, coerce, help, where, default_text or _show(default))
    return field(default=default, metadata={_SPEC: spec})


def _show(value: Any) -> str:
    if value is None or value == ():
        return "none"
    if isinstance(value, (bool, str)):
        return f"`{value}`"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _plain(text: str) -> str:
    return text.replace("`", "")


def _per_precision(index: int) -> str:
    """A precision-dependent default in words, from the numerical core's table."""
    return ", ".join(
        f"{values[index]:.0e}".replace("e-0", "e-") + f" ({precision})"
        for precision, values in PRECISION_DEFAULTS.items()
    )


@dataclass(frozen=True)
class Options:
    """Everything that steers one check. `None` means: the default for the precision in use."""

    seed: int = option(
        DEFAULT_SEED,
        integer(0, SEED_LIMIT - 1, what=f"an integer between 0 and 2**32 - 1 ({SEED_LIMIT - 1})"),
        "int",
        "seeds the random cotangent, directions, samples, the inputs of discovered layers, and "
        "numpy's and Python's global random streams during the check; "
        f"`{RANDOM_SEED}` (ini file, command lines): a fresh seed for the run, printed so the "
        "run can be repeated",
        where=Where.EVERYWHERE,
    )
    eps: float | None = option(
        None,
        optional(finite(0, inclusive=False)),
        "float",
        "finite-difference step; unset, each array's step is the precision's default times the "
        "array's RMS (for an all-zero array, the output's RMS); given, the same absolute step "
        "for every array",
        where=Where.EVERYWHERE,
        default_text=_per_precision(0),
    )
    rtol: float | None = option(
        None,
        optional(finite(0, inclusive=False)),
        "float",
        "relative tolerance per element",
        where=Where.EVERYWHERE,
        default_text=_per_precision(1),
    )
    atol: float = option(
        0.0,
        finite(0, inclusive=True),
        "float",
        "absolute slack on top of the measured noise floor",
        where=Where.EVERYWHERE,
    )
    params: tuple[str, ...] | PointedParams | None = option(  # noqa: RUF009
        None,
        optional(params_option),
        "list of str, or pointers",
        'names or glob patterns of the parameters to check (`["W", "layers.*.gamma"]`); or, '
        "for a function whose weights live outside the call (module globals, closure cells, "
        'any container), where they are: `{"Wxh": (module, "Wxh"), ...}` or '
        "`[(container, key), ...]`",
        default_text="all",
    )
    frozen: tuple[str, ...] = option(
        (),
        patterns,
        "list of str",
        "names or glob patterns of parameters declared frozen: listed as *frozen*, never "
        "perturbed, never an error for lacking a gradient",
    )
    inputs: bool = option(True, boolean, "bool", "also check the input gradients")
    extra_loss: Callable[[Any], float] | None = option(  # noqa: RUF009 (a dataclasses.field)
        None,
        optional(function("a callable taking the layer and returning a float")),
        "callable",
        "`extra_loss(layer) -> float` added to the objective, for layers whose backward adds a "
        "regulariser's gradient (a model is passed itself, a value-and-gradient function's "
        "arguments as `extra_loss(*args)`)",
    )
    loss: Callable[[Any], Any] | None = option(  # noqa: RUF009 (a dataclasses.field)
        None,
        optional(function("a callable taking the output and returning (loss, dout)")),
        "callable",
        "`loss(out) -> (value, dout)` applied to a layer's output: the objective is its value "
        "and backward receives `dout`, instead of a random cotangent",
    )
    wrt: tuple[int | str, ...] | None = option(
        None,
        optional(positions),
        "list of int or str",
        "the arguments (positions or names) a value-and-gradient function's gradients belong "
        "to, in the order it returns them",
        default_text="from the gradients returned",
    )
    grads: tuple[int, ...] | None = option(
        None,
        optional(indices),
        "list of int",
        "where a value-and-gradient function's gradients are in the tuple it returns "
        "(positions, in the order of what they belong to), when the default reading (the loss "
        "first or last, the gradients right after or before it, other values left over) cannot "
        "tell",
        default_text="read from what is returned",
    )
    random_sources: tuple[Any, ...] = option(
        (),
        streams,
        "random streams",
        "extra random streams to reset before every evaluation",
    )
    # auto: fast mode's verdict first (a passing layer or model costs tens of evaluations),
    # then every array up to auto_limit elements that a direction disagrees on is judged
    # element by element (full mode's exact map); tiny checks are full mode outright.
    mode: str = option(
        "auto",
        choice(*MODES),
        "str",
        "how to spend forward passes: " + ", ".join(f"`{m}`" for m in MODES),
        where=Where.EVERYWHERE,
    )
    samples: int = option(
        16, integer(1), "int", "elements per array in `sample` mode", where=Where.EVERYWHERE
    )
    # One direction: every checked array moves along its own +-(1+u) entries, so any wrong
    # element shows with at least its full error and equal errors cannot cancel exactly; the
    # direction is judged within its estimated numerical error, far below rtol. More directions
    # only guard against errors of several elements cancelling to within that error, at two
    # forward passes each.
    directions: int = option(
        1,
        integer(1),
        "int",
        "random directions in `fast` mode (each moves every checked array along its own "
        "random direction)",
        where=Where.EVERYWHERE,
    )
    auto_limit: int = option(
        AUTO_FULL_LIMIT,
        integer(1),
        "int",
        "`auto` maps an array up to this size element by element when a direction disagrees "
        "on it (larger ones are searched as in `fast` mode)",
        where=Where.EVERYWHERE,
    )
    # Each point draws its own cotangent and directions (and, for discovered layers, its own
    # case from gradcheck_case(rng)): a bug confined to part of the input domain, or hidden by
    # one cotangent, shows at some point. Point 0 is the check at `seed` itself.
    points: int = option(
        1,
        integer(1),
        "int",
        "check at this many points: fresh cotangents and directions per point, fresh cases for "
        "discovered layers; a row shows its worst point and fails if any point fails",
        where=Where.EVERYWHERE,
    )
    label: str | None = option(
        None, optional(str), "str", "name of the check in reports", default_text="class name"
    )
    summary: str = option(
        "short",
        choice(*SUMMARIES),
        "str",
        "the gradcheck summary after a pytest run: `short` (a line of counts and the rows of "
        "failed and errored checks) or `full` (every check and skip; also with `-v`)",
        where=Where.INI | Where.PYTEST,
    )

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def updated(self, values: Mapping[str, Any], source: str) -> Options:
        """A copy with `values` applied on top; `source` names where they came from for errors."""
        if not values:
            return self
        unknown = [k for k in values if k not in SPECS]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(k, list(SPECS), n=1)
                hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise GradcheckUsageError(
                f"{source}: unknown gradcheck option {', '.join(hints)}; "
                f"known options: {', '.join(sorted(SPECS))}"
            )
        clean = {k: SPECS[k].coerced(v, source) for k, v in values.items()}
        return replace(self, **clean)


OPTIONS: tuple[OptionSpec, ...] = tuple(
    replace(f.metadata[_SPEC], name=f.name) for f in fields(Options)
)
SPECS: dict[str, OptionSpec] = {spec.name: spec for spec in OPTIONS}


def settable(where: Where) -> list[OptionSpec]:
    """The options that may be set in `where` (one of `Where`'s front ends)."""
    return [spec for spec in OPTIONS if where in spec.where]


def draw_seed() -> int:
    return secrets.randbelow(2**31)


def asks_for_a_drawn_seed(values: Mapping[str, Any]) -> bool:
    """Whether `values` (from an ini file or a command line) say seed='random'."""
    return str(values.get("seed", "")).strip().lower() == RANDOM_SEED


def resolve_seed(values: Mapping[str, Any], draw: Callable[[], int] = draw_seed) -> dict[str, Any]:
    """`values` (from an ini file or a command line) with seed='random' replaced by `draw()`."""
    if not asks_for_a_drawn_seed(values):
        return dict(values)
    return {**values, "seed": draw()}


def markdown_table() -> str:
    """The README's options table, one row per declared option."""
    lines = [
        "| option | type | default | ini / pytest flag / `python -m pytest_gradcheck` flag "
        "| meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for spec in OPTIONS:
        places = [
            f"`{text}`"
            for flag, text in (
                (Where.INI, spec.ini_key),
                (Where.PYTEST, spec.pytest_flag),
                (Where.CLI, spec.cli_flag),
            )
            if flag in spec.where
        ]
        cells = [f"`{spec.name}`", spec.type, spec.default_text, " / ".join(places), spec.help]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
