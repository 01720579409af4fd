"""cs231n-style function pairs, `out, cache = f_forward(*args)` with `grads = f_backward(dout,
cache)`, and several outputs travelling through the checker as one flat array (`Outputs`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .access import LayerAccess, _parameters, _positional_names, callable_owner, layer_label
from .errors import GradcheckUsageError
from .numeric import is_float_array
from .returns import describe, scalar
from .valuegrad import ValueAndGradAccess, called, is_parameter_tree


class Outputs:
    """Several outputs as one flat float array for the checker, and the flat cotangent back as
    one fresh array per float output (a backward that adds into its argument gets its own).
    Integer and bool outputs are not differentiated: they get no gradient."""

    def __init__(self, outs: Sequence[Any]) -> None:
        self.count = len(outs)
        self.differentiated = [i for i, o in enumerate(outs) if is_float_array(o)]
        self.shapes = [tuple(np.shape(outs[i])) for i in self.differentiated]
        self.last: tuple[Any, ...] = tuple(outs)

    def flat(self, outs: Sequence[Any]) -> np.ndarray:
        self.last = tuple(outs)  # as forward returned them, for a `loss=` applied to them
        parts = [np.ravel(outs[i]) for i in self.differentiated]
        return np.concatenate(parts) if parts else np.zeros(0)

    def split(self, dflat: np.ndarray) -> list[np.ndarray]:
        """One gradient per float output, in order."""
        flat = np.ravel(dflat)
        grads, start = [], 0
        for shape in self.shapes:
            size = math.prod(shape)
            grads.append(np.array(flat[start : start + size].reshape(shape), copy=True))
            start += size
        return grads


class FunctionPairAccess(LayerAccess):
    """The cs231n convention: `out, cache = f_forward(*args)`, `grads = f_backward(dout, cache)`;
    with several outputs `out1, ..., outk, cache = f_forward(*args)` and
    `grads = f_backward(d1, ..., dk, cache)`.

    Array arguments are the checked arrays, in order; the tuple from backward holds one
    gradient per array argument, in the same order. Dict arguments pass through untouched
    (their `mode` forced to 'train'); they are state roots, so running statistics written into
    them are restored.
    """

    def __init__(self, forward_fn: Callable[..., Any], backward_fn: Callable[..., Any]) -> None:
        self.forward_fn = forward_fn
        self.backward_fn = backward_fn
        self.label = layer_label((forward_fn, backward_fn))
        self._cache: Any = None
        self._args: Sequence[Any] = ()
        self._outputs: Outputs | None = None

    def input_names(self, n: int) -> list[str]:
        names = _positional_names(self.forward_fn)
        return names[:n] if len(names) >= n else super().input_names(n)

    def force_train_mode(self) -> list[str]:
        forced = []
        for i, arg in enumerate(self._args):
            if (isinstance(arg, dict) and not is_parameter_tree(arg)
                    and arg.get("mode", "train") != "train"):
                arg["mode"] = "train"
                forced.append(f"arg{i}['mode']='train'")
        return forced

    def bind(self, args: Sequence[Any]) -> None:
        """Remember the (working copies of the) arguments, to find dicts whose mode to force."""
        self._args = args

    def state_roots(self) -> list[Any]:
        """Dict arguments, and the objects of functions that are bound methods (their
        counters and generators are reset and restored like a layer's)."""
        owners: list[Any] = []
        for fn in (self.forward_fn, self.backward_fn):
            owner = callable_owner(fn)
            if owner is not None and all(owner is not o for o in owners):
                owners.append(owner)
        return [*owners, *(a for a in self._args
                           if isinstance(a, dict) and not is_parameter_tree(a))]

    def tree_inputs(self, args: Sequence[Any]) -> set[int]:
        """Dict or list arguments holding parameters (`affine_forward(x, params)` with
        `params = {"W": ..., "b": ...}`) are checked leaf by leaf, against backward's
        gradient structure for them; configuration dicts (`bn_param`: a `mode` key, or
        statistics only) are not (`is_parameter_tree`)."""
        return {i for i, a in enumerate(args) if is_parameter_tree(a)}

    def extra_loss_args(self, obj: Any) -> tuple[Any, ...]:
        """`extra_loss` receives the arguments (the arrays being checked), as for a
        value-and-gradient function: a regulariser needs `w`, not the pair of functions."""
        return tuple(self._args)

    def forward(self, inputs: Sequence[Any]) -> Any:
        res = self.forward_fn(*inputs)
        if not (isinstance(res, tuple) and len(res) >= 2):
            raise GradcheckUsageError(
                f"{self.label}: the forward function must return (out, cache), or "
                f"(out1, ..., outk, cache) for several outputs, got {type(res).__name__}"
            )
        self._cache = res[-1]
        if len(res) == 2:
            self._outputs = None
            return res[0]
        # Several outputs: one flat array for the checker, split again for backward.
        if self._outputs is None or self._outputs.count != len(res) - 1:
            self._outputs = Outputs(res[:-1])
        return self._outputs.flat(res[:-1])

    def _passed_on(self, given: int) -> list[Any]:
        """The forward's arguments that backward asks for by name after (dout, cache), as
        `linear_activation_backward(dA, cache, activation)` asks for `activation`."""
        wanted = [p.name for p in _parameters(self.backward_fn)
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                  and p.default is p.empty][given:]
        names = _positional_names(self.forward_fn)[:len(self._args)]
        missing = [w for w in wanted if w not in names]
        if missing:
            raise GradcheckUsageError(
                f"{self.label}: backward takes {', '.join(map(repr, missing))} after the "
                "gradient(s) and the cache, and the forward function has no argument of that "
                "name to pass on: name backward's extra arguments as forward's, or give them "
                "defaults"
            )
        return [self._args[names.index(w)] for w in wanted]

    def backward(self, dout: np.ndarray) -> Sequence[Any]:
        douts = [dout] if self._outputs is None else self._outputs.split(dout)
        res = self.backward_fn(*douts, self._cache, *self._passed_on(len(douts) + 1))
        grads = list(res) if isinstance(res, (tuple, list)) else [res]
        arrays = [i for i, a in enumerate(self._args)
                  if isinstance(a, np.ndarray) or is_parameter_tree(a)]
        if len(grads) != len(arrays):
            # Integer arguments (indices, labels) commonly get no gradient at all.
            arrays = [i for i in arrays if not isinstance(self._args[i], np.ndarray)
                      or np.issubdtype(self._args[i].dtype, np.inexact)]
        if len(grads) != len(arrays):
            structures = [i for i in arrays if not isinstance(self._args[i], np.ndarray)]
            raise GradcheckUsageError(
                f"{self.label}: backward returned {len(grads)} gradient(s) for "
                f"{len(arrays)} array argument(s)"
                + (" and structures of parameters" if structures else "")
                + "; return one gradient per array argument (and one gradient structure per "
                "parameter dict or list), in the order of the forward function's arguments"
            )
        per_arg: list[Any] = [None] * len(self._args)
        for i, g in zip(arrays, grads):
            per_arg[i] = g
        return per_arg


def required_names(fn: Callable[..., Any]) -> list[str]:
    return [p.name for p in _parameters(fn)
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]


def is_loss_pair(forward_fn: Callable[..., Any], backward_fn: Callable[..., Any]) -> bool:
    """A pair whose backward takes no gradient: every argument it requires is named like the
    cache or like one of forward's arguments (deeplearning.ai's `backward_propagation_n(X, Y,
    cache)` after `forward_propagation_n(X, Y, parameters) -> (cost, cache)`)."""
    wanted = required_names(backward_fn)
    names = set(_positional_names(forward_fn))
    return any("cache" in w.lower() for w in wanted) and all(
        w in names or "cache" in w.lower() for w in wanted)


class LossPairAccess(ValueAndGradAccess):
    """A pair `cost, cache = f_forward(*args)`, `grads = f_backward(..., cache, ...)` whose
    backward takes no gradient, only the cache and some of forward's arguments by name: checked
    as the value-and-gradient function `args -> (cost, f_backward(...))`, backward called only
    when the gradients are needed. Its gradients are read as a value-and-gradient function's
    (a dict keyed `dW1` for a `parameters` argument, extra `dZ1`, `dA1` entries reported);
    arguments without a gradient (`X`, `Y`) are data. Configuration dicts (`bn_param`) pass
    through with `mode` forced to 'train', restored afterwards."""

    def __init__(self, forward_fn: Callable[..., Any], backward_fn: Callable[..., Any]) -> None:
        super().__init__(forward_fn, layer_label((forward_fn, backward_fn)))
        self.backward_fn = backward_fn
        self._cache: Any = None
        self._fetched = False
        self._bound: Sequence[Any] = ()

    def bind(self, args: Sequence[Any]) -> None:
        self._bound = args

    def _settings(self) -> list[dict[Any, Any]]:
        return [a for a in self._bound if isinstance(a, dict) and not is_parameter_tree(a)]

    def force_train_mode(self) -> list[str]:
        forced = []
        names = self.input_names(len(self._bound))
        for i, arg in enumerate(self._bound):
            if isinstance(arg, dict) and not is_parameter_tree(arg) and arg.get(
                    "mode", "train") != "train":
                arg["mode"] = "train"
                forced.append(f"{names[i]}['mode']='train'")
        return forced

    def state_roots(self) -> list[Any]:
        owner = callable_owner(self.backward_fn)
        roots = super().state_roots()
        extra = [] if owner is None or any(owner is r for r in roots) else [owner]
        return [*roots, *extra, *self._settings()]

    def forward(self, inputs: Sequence[Any]) -> Any:
        res = called(self.fn, inputs, self.label, f"{getattr(self.fn, '__name__', 'f')}()")
        cost = (scalar(res[0]) if isinstance(res, (tuple, list)) and len(res) == 2 else None)
        if cost is None:
            raise GradcheckUsageError(
                f"{self.label}: backward takes no gradient, only the cache and forward's "
                f"arguments ({', '.join(required_names(self.backward_fn))}), so the pair is "
                "checked through the cost: forward must return (cost, cache) with the cost one "
                f"real number; it returned {describe(res)}"
            )
        self._args, self._cache = inputs, res[1]
        self._mapped, self._fetched = None, False
        return cost

    def _gradients(self) -> Any:
        if not self._fetched:
            names = _positional_names(self.fn)[:len(self._args)]
            wanted = required_names(self.backward_fn)
            missing = [w for w in wanted if w not in names and "cache" not in w.lower()]
            if missing:
                raise GradcheckUsageError(
                    f"{self.label}: backward takes {', '.join(map(repr, missing))}, an "
                    "argument of forward that the check was not given: pass it to the check "
                    "as forward takes it"
                )
            args = [self._args[names.index(w)] if w in names else self._cache for w in wanted]
            self._returned = called(self.backward_fn, args, self.label,
                                    f"{getattr(self.backward_fn, '__name__', 'backward')}()")
            self._fetched = True
        return self._returned
