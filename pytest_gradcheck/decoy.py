"""The decoy forward: one forward from other random states and on other inputs before the
baseline is taken, so that the baseline, which every evaluation starts from, holds what it left
behind. A backward that uses state from an earlier call (the previous call's dropout mask, ReLU
mask, max-pool winners or cached input) then disagrees with the evaluations, which all replay
the check's own random state and inputs. A verdict rule (`docs/verdicts.md`): it can only turn
a pass into a failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import streams
from .calls import Calls, reset
from .numeric import is_float_array
from .phases import Attempt, DecoyRecord, Setup
from .sources import RandomSource
from .state import Snapshot, is_protection_fault

# Samples shifted by one place first; a forward that cannot take them (inputs whose order
# matters: increasing knots) gets the inputs in their own order, scaled by up to 10%, then, for
# a domain that 10% leaves (probabilities near 1), by up to 0.1%: (shift, spread) per attempt.
ATTEMPTS = ((True, 0.1), (False, 0.1), (False, 1e-3))


def decoy_forward(calls: Calls, setup: Setup, user_inputs: Sequence[Any], attempt: Attempt,
                  seed: int) -> DecoyRecord:
    """Verdict rule "decoy": run the decoy forward and return what the baseline needs of it.
    Costs 1 to 3 forwards (`ATTEMPTS`); it can only turn a pass into a failure.

    A probe, not a requirement: if every attempt raises or gives a non-finite or differently
    shaped output, everything it changed is put back and the check goes on without it."""
    # Big arrays, and whatever their size the required parameters (a forward never writes them:
    # the patch leaves them out) and the working inputs (the checker's own; the decoy runs on
    # other inputs), are made read-only for the decoy rather than copied, as in the first
    # snapshot: a decoy writing into one in place faults, and `run_protected` runs the check
    # again with copies everywhere. Optional parameters (running statistics) are copied:
    # forwards update them in place.
    protecting = attempt.protect_bytes is not None
    mine = ([a for p, a in zip(setup.params, setup.param_arrays) if p.required]
            + [a for a in setup.work if isinstance(a, np.ndarray)]
            if protecting else [])
    original = attempt.original
    before = Snapshot([*calls.access.state_roots(), *setup.work],
                      protect_bytes=attempt.protect_bytes, protect=mine,
                      reuse=original.arrays)
    attempt.undo.push(before.unprotect)  # should anything below raise
    rng = streams.stream(seed, streams.DECOY)
    # The first snapshot's copy of a user's input holds the bits of its working copy too
    # (when that is no float64 conversion); the later entries win.
    user_copies = [(w, original.saved_array(u))
                   for w, u in zip(setup.work, user_inputs)
                   if isinstance(w, np.ndarray) and isinstance(u, np.ndarray)]
    earlier = [*[(w, c) for w, c in user_copies if c is not None],
               *original.arrays, *before.arrays]
    arrays: list[np.ndarray] = []
    kept = False
    for number, (shift, spread) in enumerate(ATTEMPTS, 1):
        inputs = decoy_inputs(setup.work, rng, shift=shift, spread=spread)
        arrays = [x for x in inputs if isinstance(x, np.ndarray)] if protecting else []
        reset(setup.sources)  # puts back a global generator the first forward swapped
        scramble(setup.sources, rng)
        calls.forward_calls += 1
        try:
            out = np.asarray(calls.access.forward(inputs))
            kept = (not isinstance(out, np.matrix) and out.shape == setup.first_out.shape
                    and out.dtype.kind == "f" and bool(np.isfinite(out).all()))
        except Exception as exc:
            if is_protection_fault(exc):
                raise  # a write into a protected array: `run_protected` tries again
            kept = False
        if kept or number == len(ATTEMPTS):
            break
        before.put_back()  # what the failed attempt changed, the protection kept
    # Protected all through the decoy, so still as the first snapshot copied them when it
    # released them (nothing writes them in between): the baseline reuses those copies.
    protected = {id(a) for a in before.protected}
    untouched = [(a, saved) for a, saved in original.released if id(a) in protected]
    # The streams are reset by `record_forward`, right before its forward.
    if not kept:
        before.restore()
    # The arrays the baseline reuses untouched stay protected through its forward, which then
    # need not compare them (a big gradient: one pass over it); the others are written from now
    # on.
    before.unprotect(keep=[a for a, _ in untouched])
    return DecoyRecord(before, arrays, untouched, earlier)


def decoy_inputs(work: Sequence[Any], rng: np.random.Generator, shift: bool = True,
                 spread: float = 0.1) -> list[Any]:
    """The decoy forward's inputs: float arrays shifted by one place along their first axis of
    two or more (with `shift`: each sample takes its neighbour's values, so a mask or cache
    computed from the values, such as a ReLU's signs or a max-pool's winners, differs from the
    check's own) and moved by up to `spread` of each element's value; the values stay those of
    the inputs, signs and zeros included. Other arrays are copied, everything else is passed as
    it is."""
    inputs: list[Any] = []
    for x in work:
        if is_float_array(x):
            # Factors drawn in [1 - spread, 1 + spread) and multiplied in place: no temporary.
            moved = rng.uniform(1.0 - spread, 1.0 + spread, x.shape)
            axis = next((i for i, n in enumerate(x.shape) if n > 1), None) if shift else None
            if axis is None:
                np.multiply(moved, x, out=moved)
            else:
                m, v = np.moveaxis(moved, axis, 0), np.moveaxis(x, axis, 0)  # views
                np.multiply(m[1:], v[:-1], out=m[1:])
                np.multiply(m[:1], v[-1:], out=m[:1])
            inputs.append(moved)
        elif isinstance(x, np.ndarray):
            inputs.append(x.copy())
        else:
            inputs.append(x)
    return inputs


def scramble(sources: Sequence[RandomSource], rng: np.random.Generator) -> None:
    """Move every random stream to another state derived from `rng` (`RandomSource.scramble`).
    Each source takes its two draws from `rng` whatever its kind, so the states the others
    reach do not depend on which kinds are present."""
    for s in sources:
        seed, k = int(rng.integers(2**32)), int(rng.integers(1, 64))
        s.scramble(seed, k)
