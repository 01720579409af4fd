"""The records one phase of a check hands the next (see `checker`), and what an attempt shares.

Each record is written once by its phase and only read afterwards; nothing here runs user code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import elements, numeric, tree
from .access import Param
from .result import Entry
from .sources import RandomSource
from .state import Patch, Restorer, Snapshot


@dataclass
class Attempt:
    """What the phases of one attempt share: how arrays are protected, the undo steps, and the
    snapshots taken so far. `run_protected` may run a check twice (the second time copying
    everything): each run is an attempt of its own."""

    protect_bytes: int | None  # arrays that big are made read-only, not copied; None: copied
    undo: Restorer  # every undo step, run last first when the attempt ends
    original: Snapshot  # everything reachable, as the user had it
    baseline: Snapshot | None = None  # what every evaluation starts from (`record_forward`)


@dataclass
class CheckedArray:
    """One array to check: a working float64 array perturbed in place, and its gradient."""

    name: str
    kind: str  # "input" or "param"
    array: np.ndarray  # the live array the layer reads
    orig_dtype: str  # the dtype the user's array had
    analytic: np.ndarray | None = None  # backward's gradient, once the analytic pass has run
    # Other names of the same array (tied weights): its gradient is the sum over all of them.
    aliases: list[str] = field(default_factory=list)
    # The step each judging chose for this array, as fast mode recorded it (`report_steps`).
    steps: dict[numeric.Judging, float] = field(default_factory=dict)
    # A read-only copy of the array's bits as the numeric passes start (the baseline's), which
    # fast mode restores from instead of copying the array again; None: the modes copy it.
    saved: np.ndarray | None = None
    # A leaf of a structured input (`LayerAccess.tree_inputs`): where it lives in that input,
    # and so where its gradient lives in the input's gradient.
    path: tree.Path | None = None


@dataclass
class Setup:
    """What `prepare` leaves for the later phases."""

    work: list[Any]  # the inputs forward is called with: float64 copies of the user's arrays
    input_names: list[str]
    sources: list[RandomSource]  # every random stream, reset before each setup forward
    first_out: np.ndarray  # the first forward's output
    params: list[Param]  # the selected, differentiable parameters
    param_arrays: list[np.ndarray]  # their live arrays after promotion, aligned with `params`
    low: list[str]  # dtypes below float64 that parameters kept (they could not be replaced)
    arrays: list[CheckedArray]  # inputs first, then one per distinct parameter array
    input_rows: list[Entry]  # inputs that are not checked: integer, passed through
    param_rows: list[Entry]  # parameters that are not checked: not differentiable, not selected


@dataclass
class DecoyRecord:
    """What the decoy forward (`decoy.decoy_forward`) leaves for the baseline snapshot."""

    before: Snapshot  # the state before it; still protects `untouched`
    arrays: list[np.ndarray]  # its input arrays, protected through the baseline's forward
    untouched: list[tuple[np.ndarray, np.ndarray]]  # (array, copy) no forward wrote since
    earlier_copies: list[tuple[np.ndarray, np.ndarray]]  # copies the baseline may reuse


@dataclass
class ForwardRecord:
    """What one forward pass does, from a second forward from the baseline (`record_forward`)."""

    baseline: Snapshot  # the state before it; the analytic pass ends by restoring it
    out: np.ndarray  # its output
    patch: Patch  # what it changed
    used: list[RandomSource]  # the streams it drew from
    mutated: bool  # it modified an input in place
    prepare: Callable[[], None]  # applies the patch and resets the used streams
    call_inputs: Callable[[], list[Any]]  # one evaluation's inputs (fresh copies if mutated)
    loss_terms: list[Callable[[], float]]  # added to the objective sum(g * out)
    precision: str  # what the output and the parameters kept in low precision allow


@dataclass
class AnalyticPass:
    """The objective and backward's gradients (`analytic_pass`)."""

    cotangent: np.ndarray  # g: the objective is sum(g * out) plus the loss terms
    f_zero: float  # the objective at the unperturbed point
    terms_abs_sum: float  # sum of the objective's |terms|: the scale of its rounding noise
    arrays: list[CheckedArray]  # the arrays to check, each with its analytic gradient
    param_rows: list[Entry]  # `Setup.param_rows` and the parameters backward gave no gradient


@dataclass
class NumericPasses:
    """The verdicts of one run of the mode, and how they were reached."""

    judging: numeric.Judging
    evaluate: Callable[[], float]  # one evaluation of the objective
    verdicts: list[elements.ArrayVerdict]  # aligned with `AnalyticPass.arrays`
    every_stream_reset: bool = False  # every random stream was reset before every evaluation
    # How the modes reached these verdicts; only the final passes' notes reach the report.
    notes: list[str] = field(default_factory=list)
