"""Adapters for the shapes of code people gradient-check besides `forward(x)`/`backward(dout)`.

Each is a `LayerAccess`; `conventions.pytest_gradcheck_adapt` picks one from the object's
methods and signatures, and `apply_options` applies the `loss=` and `wrt=` options.

- `ValueAndGradAccess` (in `valuegrad`): a function `f(*args) -> (loss, grads)`;
- `ModelLossAccess`: an object with `loss(*args) -> (loss, grads)` over a parameter dict;
- `OwnLossNetworkAccess`: a network whose `backward(output, y)` starts from its own loss object
  (the nnfs book's `Model`);
- `MethodLayerAccess`: layers whose backward takes more than the output gradient:
  `backward(x, dy)`, `forward -> (out, cache)` with `backward(dout, cache)`, and several outputs;
- `LossOnOutputAccess`: any of the layer shapes with a real loss applied to its output.

A loss-shaped adapter returns its loss as a 0-d array, for which the checker's cotangent is
exactly 1.0: the objective is the loss itself. Several outputs travel as one flat array
(`Outputs`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .access import (
    INPUT_GRAD_ATTRS,
    STATISTIC_MARKERS,
    LayerAccess,
    ObjectAccess,
    Param,
    _parameters,
    _positional_names,
    callable_owner,
    layer_label,
    real_attr,
)
from .backprop import BackpropAccess
from .errors import GradcheckUsageError
from .options import Options
from .pairs import Outputs
from .pointers import PointedParams, resolve
from .returns import describe, scalar
from .valuegrad import ValueAndGradAccess, called, grad_like, scaled

# Attributes holding a model's parameter dict, in the order they are looked for.
PARAM_DICTS = ("params", "parameters")
# Attributes by which a model declares parameters it does not train (names, or name -> bool).
NON_TRAINABLE_ATTRS = ("non_trainable", "frozen")


def required_positional(fn: Callable[..., Any]) -> list[str]:
    return [
        p.name
        for p in _parameters(fn)
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]


# -- models with a loss method -----------------------------------------------------------------


class ModelLossAccess(LayerAccess):
    """An object whose `loss(*args)` returns `(loss, grads)`, `grads` keyed like its parameter
    dict (`params`); the objective is `loss`. The arguments are data: held fixed."""

    def __init__(self, model: Any, hook: Any, label: str | None = None) -> None:
        self.layer = model
        self.hook = hook
        self.label = label or layer_label(model)
        self._args: Sequence[Any] = ()
        self._pending: dict[Any, Any] = {}
        # Whether loss() changes the parameters (an optimizer step inside it); None until the
        # first call tells.
        self._steps: bool | None = None
        # Published by backward: gradient arrays the checker may zero and mark are never the
        # ones the latest forward returned.
        self._grads: dict[Any, Any] | None = None

    def input_names(self, n: int) -> list[str]:
        names = _positional_names(self.layer.loss)
        return names[:n] if len(names) >= n else super().input_names(n)

    def state_roots(self) -> list[Any]:
        return [self.layer]

    def force_train_mode(self) -> list[str]:
        return [w for what in self.hook.pytest_gradcheck_train_mode(layer=self.layer)
                for w in what]

    def random_sources(self) -> list[Any]:
        return [s for found in self.hook.pytest_gradcheck_random_sources(layer=self.layer)
                for s in found]

    def fixed_inputs(self) -> set[int]:
        return set(range(len(self._args)))

    def forward(self, inputs: Sequence[Any]) -> Any:
        saved = self._params_now() if self._steps is not False else None
        try:
            res = called(self.layer.loss, inputs, self.label, "loss()")
        finally:
            if saved is not None:
                self._put_back(saved)
        if not (isinstance(res, (tuple, list)) and len(res) == 2):
            raise GradcheckUsageError(
                f"{self.label}: loss() returned {describe(res)}; a model is checked through "
                "loss(*args) -> (loss, grads): pass the targets too, check(model, X, y)"
            )
        loss = scalar(res[0])
        if loss is None or not isinstance(res[1], dict):
            raise GradcheckUsageError(
                f"{self.label}: loss() must return (loss, grads) with one real number and a "
                f"dict keyed like the parameter dict, got ({describe(res[0])}, "
                f"{describe(res[1])})"
            )
        self._args = inputs
        self._pending = res[1]
        return loss

    def _params_now(self) -> list[tuple[Any, np.ndarray, np.ndarray]]:
        found = self._found_dict()  # none yet: loss() may create them on its first call
        pdict = found[1] if found else {}
        return [(k, v, v.copy()) for k, v in pdict.items()
                if isinstance(v, np.ndarray) and v.dtype.kind in "biufc"]  # numbers only

    def _found_dict(self) -> tuple[str, dict[Any, Any]] | None:
        for name in PARAM_DICTS:
            d = real_attr(self.layer, name)
            if isinstance(d, dict) and d:
                return name, d
        return None

    def _put_back(self, saved: list[tuple[Any, np.ndarray, np.ndarray]]) -> None:
        """Undo what loss() did to the parameters (an optimizer step after computing the
        gradients): every call must see the parameters the checker set, and the gradients
        returned belong to those. Only watched while the first call showed such a step."""
        found = self._found_dict()
        pdict = found[1] if found else {}
        stepped = False
        for key, arr, before in saved:
            if pdict.get(key) is not arr:  # a new array assigned: the checker's is put back
                pdict[key] = arr
                stepped = True
            if not np.array_equal(arr, before, equal_nan=arr.dtype.kind in "fc"):
                np.copyto(arr, before)
                stepped = True
        if self._steps is None:
            self._steps = stepped

    def backward(self, dout: np.ndarray) -> Sequence[Any]:
        scale = float(dout)
        self._grads = {k: scaled(g, scale) for k, g in self._pending.items()}
        return [None] * len(self._args)

    def parameters(self) -> list[Param]:
        pattr, pdict = self._param_dict()
        frozen = self._non_trainable()
        out = []
        for key, value in pdict.items():
            if not isinstance(value, np.ndarray):
                continue
            # As the dict convention does: a statistic-like name is optional (listed as not
            # differentiated when loss() returns no gradient for it), never exempt from a
            # gradient loss() does return.
            statistic = any(s in str(key).lower() for s in STATISTIC_MARKERS)
            p = self._param(pattr, key, key not in frozen)
            p.required = not statistic
            out.append(p)
        return out

    def _param(self, pattr: str, key: Any, trainable: bool) -> Param:
        model = self.layer

        def get() -> Any:
            return getattr(model, pattr)[key]

        def set_(value: Any) -> None:
            getattr(model, pattr)[key] = value

        def grad() -> Any:
            if self._grads is None:
                return None
            found = self._grads.get(key)
            if found is None and isinstance(key, str):
                found = self._grads.get(f"d{key}")  # gradients keyed dW1 for W1
            return found

        return Param(str(key), get, set_, grad, self.label, differentiable=trainable,
                     grad_source=f"loss()[1][{key!r}]")

    def _param_dict(self) -> tuple[str, dict[Any, Any]]:
        found = self._found_dict()
        if found is not None:
            return found
        raise GradcheckUsageError(
            f"{self.label}: a model is checked over its parameter dict, and it has none: keep "
            "the parameters in self.params (a dict of arrays) keyed like the gradients loss() "
            "returns"
        )

    def _non_trainable(self) -> set[Any]:
        names: set[Any] = set()
        for attr in NON_TRAINABLE_ATTRS:
            value = real_attr(self.layer, attr)
            if isinstance(value, (list, tuple, set, frozenset)):
                names.update(value)
        trainable = real_attr(self.layer, "trainable")
        if isinstance(trainable, dict):
            names.update(k for k, v in trainable.items() if not v)
        return names


# -- networks through their own loss (nnfs Model) ----------------------------------------------


def own_loss(obj: Any) -> Any:
    """The loss object of a network whose backward starts from it (nnfs `Model`): a `loss`
    attribute (not a method) with a `calculate` method, and a backward taking the output and
    the targets. None for anything else."""
    loss = real_attr(obj, "loss")
    if loss is None or getattr(loss, "__self__", None) is obj:
        return None
    if not callable(getattr(loss, "calculate", None)):
        return None
    return loss if len(required_positional(obj.backward)) >= 2 else None


class OwnLossNetworkAccess(ObjectAccess):
    """`forward(X, training)`, then the loss object's `calculate(output, *targets)` (with the
    regularisation loss when it offers `include_regularization`), and `backward(output,
    *targets)`. Whatever `calculate` accumulates is started afresh (`new_pass()`) before every
    call; the checker restores it afterwards like all other state."""

    def input_names(self, n: int) -> list[str]:
        first = [p for p in _positional_names(self.layer.forward) if p not in self._forward_kwargs]
        targets = _positional_names(self.layer.backward)[1:]
        names = (first[:1] or ["X"]) + targets
        return names[:n] if len(names) >= n else super().input_names(n)

    _n_inputs = 0

    def fixed_inputs(self) -> set[int]:
        """The targets are data (one-hot labels are float arrays): held fixed."""
        return set(range(1, self._n_inputs))

    def forward(self, inputs: Sequence[Any]) -> Any:
        wanted = len(required_positional(self.layer.backward)) - 1  # backward(output, *targets)
        if len(inputs) < 1 + wanted:
            raise GradcheckUsageError(
                f"{self.label}: got {len(inputs)} argument(s); a network checked through its "
                f"own loss takes forward's input and the {wanted} target(s) backward takes: "
                "check(model, X, y)"
            )
        self._n_inputs = len(inputs)
        x, targets = inputs[0], inputs[1:]
        out = super().forward([x])
        loss = own_loss(self.layer)
        new_pass = getattr(loss, "new_pass", None)
        if callable(new_pass):
            new_pass()
        if "include_regularization" in {p.name for p in _parameters(loss.calculate)}:
            value = loss.calculate(out, *targets, include_regularization=True)
        else:
            value = loss.calculate(out, *targets)
        parts = value if isinstance(value, (tuple, list)) else (value,)
        scalars = [scalar(v) for v in parts]
        if any(s is None for s in scalars):
            raise GradcheckUsageError(
                f"{self.label}: loss.calculate returned {describe(value)}; expected a number, "
                "or (data_loss, regularization_loss)"
            )
        self._out, self._targets = out, targets
        return np.asarray(sum(s for s in scalars if s is not None))

    def backward(self, dout: np.ndarray) -> Sequence[Any]:
        # The objective's cotangent is 1.0 (a 0-d output): backward from the loss as it is.
        self.layer.backward(self._out, *self._targets)
        layers = real_attr(self.layer, "layers")
        first = layers[0] if isinstance(layers, (list, tuple)) and layers else None
        dx = None
        for attr in INPUT_GRAD_ATTRS:
            dx = real_attr(first, attr) if first is not None else None
            if dx is not None:
                break
        return [dx, *([None] * len(self._targets))]


# -- other method signatures and several outputs -----------------------------------------------

INPUT_BACK = "backward(inputs..., douts...)"
CACHE = "forward -> (outs..., cache), backward(douts..., cache)"
OUTPUTS = "backward(douts...)"


def takes_varargs(fn: Callable[..., Any]) -> bool:
    return any(p.kind == p.VAR_POSITIONAL for p in _parameters(fn))


def backward_signature(layer: Any) -> Callable[..., Any]:
    """The backward whose signature tells how to call `layer.backward`: the method itself, or,
    when it takes `*args` (a subclass wrapping its base's backward), the nearest base class's
    backward with named arguments."""
    method = layer.backward
    if not takes_varargs(method):
        return method  # type: ignore[no-any-return]
    for klass in type(layer).__mro__[1:]:
        fn = klass.__dict__.get("backward")
        if inspect.isfunction(fn) and not takes_varargs(fn):
            return fn.__get__(layer, type(layer))  # type: ignore[no-any-return]
    return method  # type: ignore[no-any-return]


def method_style(layer: Any) -> str | None:
    """How a layer's backward with two or more required arguments takes them, from their
    names: the last named like `cache` -> CACHE; all named like gradients (`dh`, `dc`,
    `grad_out`) -> OUTPUTS; inputs first, then gradients (`x, dy`) -> INPUT_BACK. None when the
    names say none of these. A backward taking `*args` gets one gradient per output (OUTPUTS).
    """
    backward = backward_signature(layer)
    if takes_varargs(backward):
        return OUTPUTS
    names = required_positional(backward)
    if "cache" in names[-1].lower():
        return CACHE
    grads = [grad_like(n) for n in names]
    if all(grads):
        return OUTPUTS
    k = grads.index(True) if True in grads else len(grads)
    if 0 < k < len(names) and all(grads[k:]):
        return INPUT_BACK
    return None


class MethodLayerAccess(ObjectAccess):
    """A layer object whose backward takes more than one gradient: see `method_style`."""

    def __init__(self, layer: Any, hook: Any, style: str, label: str | None = None) -> None:
        super().__init__(layer, hook, label)
        self.style = style
        self._outputs: Outputs | None = None
        self._inputs: Sequence[Any] = ()
        self._cache: Any = None
        self._backward = backward_signature(layer)
        self._backward_args = required_positional(self._backward)

    def forward(self, inputs: Sequence[Any]) -> Any:
        res = self._call_forward(inputs)
        self._inputs = inputs
        if self.style == CACHE:
            if not (isinstance(res, tuple) and len(res) >= 2):
                raise GradcheckUsageError(
                    f"{self.label}: backward takes a cache ({', '.join(self._backward_args)}), "
                    f"so forward must return (out, cache); it returned {describe(res)}"
                )
            res, self._cache = res[:-1], res[-1]
            if len(res) == 1:
                res = res[0]
        if res is None:
            res = real_attr(self.layer, "output")
        if not isinstance(res, tuple):
            self._outputs = None
            return res
        if self._outputs is None or self._outputs.count != len(res):
            self._outputs = Outputs(res)
        return self._outputs.flat(res)

    def backward(self, dout: np.ndarray) -> Sequence[Any]:
        douts: list[Any] = [dout] if self._outputs is None else list(self._outputs.split(dout))
        wanted = len(self._backward_args) - (1 if self.style == CACHE else 0)
        if self.style == INPUT_BACK:
            wanted -= len(self._inputs)
        if len(douts) != wanted and not takes_varargs(self._backward):
            raise GradcheckUsageError(
                f"{self.label}: forward gave {len(douts)} float output(s) but "
                f"backward({', '.join(self._backward_args)}) takes {wanted} gradient(s); "
                "implement the pytest_gradcheck_adapt hook for this layer's convention"
            )
        if self.style == INPUT_BACK:
            return self._input_grads(self.layer.backward(*self._inputs, *douts))
        if self.style == CACHE:
            return self._input_grads(self.layer.backward(*douts, self._cache))
        return self._input_grads(self.layer.backward(*douts))


# -- loss= on a layer or network ---------------------------------------------------------------


class LossOnOutputAccess(LayerAccess):
    """A layer access whose output goes through `loss(out) -> (value, dout)`: the objective is
    the value, and backward starts from `dout`."""

    def __init__(self, inner: LayerAccess, loss: Callable[[Any], Any]) -> None:
        self.inner = inner
        self.loss = loss
        self.label = inner.label
        self.layer = getattr(inner, "layer", None)
        self._dout: Any = None

    def input_names(self, n: int) -> list[str]:
        return self.inner.input_names(n)

    def bind(self, args: Sequence[Any]) -> None:
        """A pair's dict arguments, for the pair's training mode and state roots."""
        self.inner.bind(args)

    def state_roots(self) -> list[Any]:
        """The layer's, and the loss's object (a bound method's or a callable instance):
        what it accumulates and its own generators are reset and restored like the layer's."""
        owner = callable_owner(self.loss)
        inner = self.inner.state_roots()
        return inner if owner is None or any(owner is r for r in inner) else [*inner, owner]

    def force_train_mode(self) -> list[str]:
        return self.inner.force_train_mode()

    def parameters(self) -> list[Param]:
        return self.inner.parameters()

    def random_sources(self) -> list[Any]:
        return self.inner.random_sources()

    def loss_terms(self) -> list[Callable[[], float]]:
        return self.inner.loss_terms()

    def notes(self) -> list[str]:
        return self.inner.notes()

    def extra_loss_args(self, obj: Any) -> tuple[Any, ...]:
        """What `extra_loss` receives without `loss=`: a pair's arguments, else the layer."""
        return self.inner.extra_loss_args(obj)

    def forward(self, inputs: Sequence[Any]) -> Any:
        out = self.inner.forward(inputs)
        # Several outputs travel flat through the checker; the loss gets them as returned.
        outputs: Outputs | None = getattr(self.inner, "_outputs", None)
        res = called(self.loss, [out if outputs is None else outputs.last], self.label, "loss=")
        value = scalar(res[0]) if isinstance(res, (tuple, list)) and len(res) == 2 else None
        if value is None:
            raise GradcheckUsageError(
                f"{self.label}: loss= must return (value, dout) with one real number, got "
                f"{describe(res)}"
            )
        # Only backward reads the gradient: it is checked and flattened there, once, not on
        # every numeric evaluation.
        self._dout = (res[1], outputs, np.shape(out))
        return value

    def _flat_douts(self, douts: Any, outputs: Outputs) -> np.ndarray:
        """The loss's gradients for several outputs (one per output, in order; None for an
        output it does not use) as the one flat array the inner access splits again."""
        n = outputs.count
        if not isinstance(douts, (tuple, list)) or len(douts) not in (
            n, len(outputs.differentiated)
        ):
            raise GradcheckUsageError(
                f"{self.label}: forward returns {n} outputs, so loss= receives them as a tuple "
                f"and must return (value, (dout1, ..., dout{n})), one gradient per output in "
                f"order (None for one it does not use); it returned {describe(douts)}"
            )
        if len(douts) != n:  # one per float output only
            douts = [douts[outputs.differentiated.index(i)]
                     if i in outputs.differentiated else None for i in range(n)]
        parts = []
        for i, shape in zip(outputs.differentiated, outputs.shapes):
            d = douts[i]
            if d is None:
                d = np.zeros(shape)
            if np.shape(d) != shape:
                raise GradcheckUsageError(
                    f"{self.label}: loss= returned a gradient of shape {np.shape(d)} for "
                    f"output {i} of shape {shape}"
                )
            parts.append(np.ravel(np.asarray(d, dtype=np.float64)))
        return np.concatenate(parts) if parts else np.zeros(0)

    def backward(self, dout: np.ndarray) -> Sequence[Any]:
        grad, outputs, shape = self._dout
        if outputs is not None:
            grad = self._flat_douts(grad, outputs)
        elif np.shape(grad) != shape:
            raise GradcheckUsageError(
                f"{self.label}: loss= returned a gradient of shape {np.shape(grad)} for an "
                f"output of shape {shape}"
            )
        return self.inner.backward(np.array(grad, dtype=np.float64) * float(dout))


LOSS_SHAPES = (ValueAndGradAccess, ModelLossAccess, OwnLossNetworkAccess)


def apply_options(access: LayerAccess, opts: Options) -> LayerAccess:
    """`access` with the options that choose how code is read applied: `loss=`, `wrt=`,
    `grads=` and `params=` pointing at weights outside the call."""
    loss, wrt = opts.loss, opts.wrt
    pointers = opts.params if isinstance(opts.params, PointedParams) else None
    if isinstance(access, BackpropAccess):
        # wrt= names the parameter containers in the order backprop returns their gradients;
        # loss= is the objective on feedforward's output.
        access.order = tuple(str(w) for w in wrt) if wrt is not None else None
        access.loss = loss
        wrt = loss = None
    for name, given in (("wrt", wrt), ("grads", opts.grads), ("params", pointers)):
        if given is not None and not isinstance(access, ValueAndGradAccess):
            what = ("pointing at weights outside the call (module globals, closure cells) "
                    if name == "params" else "")
            raise GradcheckUsageError(
                f"{access.label}: {name}= {what}applies to value-and-gradient functions only "
                f"(f(*args) -> (loss, gradients)), and this is checked as "
                f"{SHAPE_NAMES.get(type(access).__name__, 'a layer')}"
                + ("; a layer's or model's own parameters are found on it: name them with "
                   "params=['W', ...] to select some" if name == "params" else "")
            )
    if isinstance(access, ValueAndGradAccess):
        if wrt is not None:
            access.wrt = tuple(wrt)
        if opts.grads is not None:
            access.grad_positions = tuple(opts.grads)
        if pointers is not None:
            resolve(pointers, access.label)
            access.pointers = tuple(pointers)
    if loss is not None:
        if isinstance(access, LOSS_SHAPES):
            raise GradcheckUsageError(
                f"{access.label}: loss= applies to layers; this is already checked through "
                "its own loss"
            )
        return LossOnOutputAccess(access, loss)
    return access


SHAPE_NAMES = {
    "ModelLossAccess": "a model with a loss method",
    "OwnLossNetworkAccess": "a network through its own loss",
    "FunctionPairAccess": "a function pair",
    "MethodLayerAccess": "a layer",
    "ObjectAccess": "a layer",
    "BackpropAccess": "a network with backprop(x, y)",
}


# -- refusals: the closest rule and what would make it work ------------------------------------

# Method names that suggest a backward pass, a loss, gradients (for a refusal's hint).
BACKWARD_LIKE = ("backward_pass", "backprop", "bprop", "backward_propagation", "grad_input")
LOSS_LIKE = ("loss", "cost", "objective", "J", "compute_cost", "compute_loss", "value")
GRAD_LIKE = ("grad", "grads", "gradient", "gradients", "compute_grads", "compute_gradients",
             "derivative", "backward")


def _methods(obj: Any) -> list[str]:
    return [n for n in dir(type(obj)) if not n.startswith("_")
            and callable(getattr(type(obj), n, None))]


def refusal(obj: Any) -> str:
    """Why `obj` fits no shape, naming the closest rule and the call that would check it; no
    shape whose condition the object does not meet is suggested."""
    kind = type(obj).__name__
    methods = _methods(obj) if not isinstance(obj, (tuple, list, dict)) else []
    if isinstance(obj, tuple) and len(obj) == 2 and all(callable(f) for f in obj):
        return ("a tuple of two callables is a function pair (forward_fn, backward_fn), but the "
                "first is a layer object: pass the layer itself")
    if isinstance(obj, (tuple, list)) and obj and all(callable(f) for f in obj):
        return (f"a {kind} of {len(obj)} callables: a function pair is exactly two, "
                "(forward_fn, backward_fn)")
    if "forward" in methods and "backward" not in methods:
        other = [m for m in methods if m in BACKWARD_LIKE or m.startswith("backward")]
        if other:
            return (f"{kind} has forward() and {other[0]}() but no backward(): a layer needs "
                    "forward() and backward() methods; teach the checker that "
                    f"{other[0]} is the backward with the pytest_gradcheck_adapt hook "
                    "(docs/adapting.md), or check it in the universal form, "
                    "check(lambda p: (loss(p), grads(p)), params)")
        return (f"{kind} has forward() but no backward(): a layer needs forward() and "
                "backward() methods; for code that computes its gradients elsewhere use the "
                "universal form, check(lambda p: (loss(p), grads(p)), params)")
    losses = [m for m in methods if m in LOSS_LIKE]
    grads = [m for m in methods if m in GRAD_LIKE]
    if losses and grads:
        return (f"{kind} has {losses[0]}() and {grads[0]}() but is neither a layer "
                "(forward() and backward()) nor a model (a loss() method returning (loss, "
                "grads)): check it in the universal form, "
                f"check(lambda p: (obj.{losses[0]}(p), obj.{grads[0]}(p)), params), with "
                "params the structure both take")
    if isinstance(obj, (np.ndarray, int, float, str, dict, list)):
        return (f"the first argument is the code to check, and a {kind} is data: pass the "
                "layer, the function or the pair first, then its arguments: "
                "check(layer, x) or check(f, *args)")
    return (f"cannot check a {kind}: a layer needs forward() and backward() methods, a "
            "cs231n-style pair is passed as (forward_fn, backward_fn), a network with "
            "backprop(x, y) and feedforward(x) is checked as it is; any other code can be "
            "checked in the universal form, a function of its parameters returning the loss "
            "and the gradients in the same structure: check(lambda p: (loss(p), grads(p)), "
            "params); or teach the checker this shape with the pytest_gradcheck_adapt hook")
