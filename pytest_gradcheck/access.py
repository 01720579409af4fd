"""Layer access: the protocol the checker talks to, and the two built-in shapes of it.

The checker never looks inside a layer itself. A `LayerAccess` (returned by the
`pytest_gradcheck_adapt` hook) runs forward and backward and lists `Param`s; finding parameters,
sub-layers, train-mode switches and random sources of plain objects is delegated to further hooks,
so projects can teach the checker their conventions piece by piece.
"""

from __future__ import annotations

import functools
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import tree
from .errors import GradcheckUsageError
from .numeric import is_float_array
from .pointers import Pointer
from .state import same_bits

# Forward keywords that select training / batch-statistics behaviour, with the value that does.
TRAIN_KEYWORDS: dict[str, Any] = {
    "training": True,
    "train": True,
    "is_training": True,
    "train_mode": True,
    "mode": "train",
}
# Where layers that return None from backward leave the input gradient.
INPUT_GRAD_ATTRS = ("dinputs", "dinput", "dx", "grad_input")
# Parameter-dict entries named like these are statistics, not parameters, when no gradient
# appears for them.
STATISTIC_MARKERS = ("running", "moving", "num_batches")


@dataclass
class Param:
    """One parameter array of a layer, and where its gradient is found after backward.

    `get`/`set` read and replace the array (set is None when it cannot be replaced, e.g. a
    read-only property); `grad` returns the gradient after backward, or None if there is none.
    `differentiable=False` marks entries such as running statistics: listed, never perturbed.
    `required=False` marks an entry whose gradient may legitimately be absent after backward
    (then it is listed as not differentiated instead of raising). `grad_source` says where the
    gradient is stored (`grads['W']`, `dW`), for messages.
    """

    name: str
    get: Callable[[], Any]
    set: Callable[[Any], None] | None
    grad: Callable[[], Any] | None
    layer: str = ""
    differentiable: bool = True
    required: bool = True
    grad_source: str = ""


def dict_param(name: str, layer: Any, pattr: str, gattr: str | None, key: str, label: str) -> Param:
    """A parameter stored as `layer.<pattr>[key]` with its gradient at `layer.<gattr>[key]`.

    The dicts are looked up on every call because layers often rebind them in backward.
    """

    def get() -> Any:
        return getattr(layer, pattr)[key]

    def set_(value: Any) -> None:
        getattr(layer, pattr)[key] = value

    grad = None
    if gattr is not None:

        def grad() -> Any:
            return (real_attr(layer, gattr) or {}).get(key)

    return Param(name, get, set_, grad, label, differentiable=gattr is not None,
                 grad_source=f"{gattr}[{key!r}]" if gattr is not None else "")


def is_float_scalar(value: Any) -> bool:
    """A Python float or a numpy floating scalar: a parameter the checker perturbs by rebinding
    it, as a 0-d float64 array, where it lives."""
    return isinstance(value, (float, np.floating)) and not isinstance(value, bool)


def tree_params(layer: Any, pattr: str, gattr: str | None, prefix: str, label: str) -> list[Param]:
    """One parameter per float leaf of the container `layer.<pattr>` (any nesting of dicts,
    read-only mappings, lists and tuples), its gradient at the same place in `layer.<gattr>`
    (or under the `d`-prefixed key). Arrays must get a gradient from backward unless named like
    statistics (`running_mean`); float scalars are listed as not differentiated when none
    comes. An object-dtype array is refused: nothing in it can be perturbed."""
    root = real_attr(layer, pattr)
    bare = isinstance(root, Mapping)
    found = []
    for path, value in tree.leaves(root):
        name = prefix + tree.path_name(pattr, path, bare)
        if isinstance(value, np.ndarray) and value.dtype == object:
            raise GradcheckUsageError(
                f"parameter {name!r} of {label} is an object array, which the checker cannot "
                "perturb element by element: store a float array, or keep it out of "
                f"{pattr} (a parameter container holds what backward differentiates)"
            )
        scalar = is_float_scalar(value)
        if not (isinstance(value, np.ndarray) or scalar):
            continue

        def get(path: tree.Path = path) -> Any:
            return tree.lookup(getattr(layer, pattr), path)

        def set_(value: Any, path: tree.Path = path) -> None:
            tree.assign(getattr(layer, pattr), path, value)

        grad = None
        if gattr is not None:

            def grad(path: tree.Path = path) -> Any:
                return tree.gradient_at(real_attr(layer, gattr), path)

        p = Param(name, get, set_ if tree.can_assign(root, path) else None, grad, label,
                  differentiable=gattr is not None,
                  grad_source=f"{gattr}{tree.subscript(path)}" if gattr else "")
        statistic = bool(path) and any(s in str(path[-1]).lower() for s in STATISTIC_MARKERS)
        p.required = not statistic and not scalar
        found.append(p)
    return found


def attr_param(
    name: str, layer: Any, pattr: str, gattr: str, label: str, settable: bool = True
) -> Param:
    """A parameter stored as attribute `pattr` with its gradient in attribute `gattr`.

    `settable=False` (a property without a setter) leaves `set` None: the checker then perturbs
    the array the attribute returns in place, or says why it cannot.
    """

    def set_(value: Any) -> None:
        setattr(layer, pattr, value)

    return Param(
        name,
        lambda: getattr(layer, pattr),
        set_ if settable else None,
        lambda: real_attr(layer, gattr),
        label,
        grad_source=gattr,
    )


def arm_gradients(params: Sequence[Param]) -> Callable[[], list[str]]:
    """Fill every existing gradient array with -0.0 before backward; the returned function
    lists, after backward, the parameters whose gradient backward never wrote.

    A gradient dict filled in `__init__` otherwise hides a parameter backward forgets: its stale
    array would be judged as the gradient. -0.0 is a mark no write leaves behind: assigning a
    computed value replaces it, and accumulating (`+=`) any value, +0.0 included, yields that
    value (-0.0 + 0.0 is +0.0). Only an array that is still the very same object and still
    -0.0 in every element counts as never written. A real gradient that is -0.0 in every
    element (products with a zero mask, e.g. all-dead ReLU units, summed with the same sign
    over the whole batch under a random cotangent) is very unlikely; should it happen, the
    check reports the parameter as never written instead of comparing, and another seed or
    inputs that reach the parameter settle it.
    """
    armed: list[tuple[str, Callable[[], Any], np.ndarray]] = []
    for p in params:
        read = p.grad
        grad = read() if read is not None else None
        if (
            read is not None
            and isinstance(grad, np.ndarray)
            and grad.dtype.kind == "f"  # np.floating
            and grad.flags.writeable
            and grad.size
        ):
            grad.fill(-0.0)
            armed.append((p.name, read, grad))

    def unwritten() -> list[str]:
        return [
            name
            for name, read, before in armed
            if read() is before and not np.any(before) and bool(np.all(np.signbit(before)))
        ]

    return unwritten


def unwritten_gradient_message(name: str, grad_source: str) -> str:
    """The error row's message for a parameter `arm_gradients` found unwritten."""
    return (f"backward never wrote the gradient of {name!r} ({grad_source or 'its gradient array'}"
            " still holds the value it had before backward); backward must store every "
            "parameter's gradient on every call (assign it or add to it), or exclude the "
            "parameter with params=[...]")


# -- reading user objects ---------------------------------------------------------------------
# Layers may answer every name through `__getattr__` (proxies, Mock-like objects) and keep
# attributes in `__slots__` or behind properties. Conventions read only what an object really
# has: its instance dict, its slots, and properties its class defines.


def real_attr(obj: Any, name: str, default: Any = None) -> Any:
    """`obj.<name>` if the object really has that attribute (instance dict, slot, class
    attribute, property), else `default`; never a value made up by `__getattr__`."""
    if name not in instance_dict(obj):
        try:
            inspect.getattr_static(obj, name)
        except AttributeError:
            return default
    try:
        return getattr(obj, name)
    except AttributeError:  # an unset slot
        return default


def instance_dict(obj: Any) -> dict[str, Any]:
    """The instance `__dict__`, or {} (slotted objects; a `__getattr__` may answer the name)."""
    try:
        d = object.__getattribute__(obj, "__dict__")
    except (AttributeError, TypeError):
        return {}
    return d if isinstance(d, dict) else {}


def instance_attributes(obj: Any) -> dict[str, Any]:
    """A copy of the instance dict plus the values of set slots (base classes' slots too)."""
    attrs = dict(instance_dict(obj))
    for klass in type(obj).__mro__:
        slots = klass.__dict__.get("__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            if not isinstance(slot, str) or slot in ("__dict__", "__weakref__"):
                continue
            if slot.startswith("__") and not slot.endswith("__"):
                slot = f"_{klass.__name__.lstrip('_')}{slot}"  # name mangling
            desc = klass.__dict__.get(slot)
            if slot in attrs or not inspect.ismemberdescriptor(desc):
                continue
            try:
                attrs[slot] = desc.__get__(obj, type(obj))
            except AttributeError:  # declared, never set
                continue
    return attrs


def class_properties(obj: Any) -> dict[str, property]:
    """The properties the object's class defines (or inherits), by name; never called here."""
    found: dict[str, property] = {}
    seen: set[str] = set()
    for klass in type(obj).__mro__:
        for name, value in klass.__dict__.items():
            if name not in seen:
                seen.add(name)
                if isinstance(value, property):
                    found[name] = value
    return found


def _str_attr(obj: Any, name: str) -> str | None:
    try:
        value = real_attr(obj, name)
    except Exception:  # a property that raises
        return None
    return value if isinstance(value, str) and value else None


def layer_label(obj: Any) -> str:
    """A plain str naming the layer: its `__name__` if it is a str, else its class name."""
    if isinstance(obj, tuple) and len(obj) == 2 and all(callable(f) for f in obj):
        return f"{_fn_name(obj[0])}/{_fn_name(obj[1])}"
    return _fn_name(obj)


def callable_owner(fn: Any) -> Any:
    """The object whose state a callable carries: a bound method's object, or a callable
    instance itself; None for plain functions, builtins, classes and modules."""
    owner = fn.__self__ if inspect.ismethod(fn) else fn
    if (inspect.isfunction(owner) or inspect.isbuiltin(owner) or inspect.isclass(owner)
            or inspect.ismodule(owner)):
        return None
    return owner


def _fn_name(fn: Any) -> str:
    if inspect.ismethod(fn):  # its __name__ is forwarded, not its own: `Class.method`
        return _str_attr(fn.__func__, "__qualname__") or _fn_name(fn.__func__)
    return _str_attr(fn, "__name__") or type(fn).__name__


def _parameters(fn: Callable[..., Any]) -> tuple[inspect.Parameter, ...]:
    """The parameters of `fn` (without self for methods), cached per underlying function:
    inspect.signature costs tens of microseconds, a sizeable part of a fast-mode check."""
    func = getattr(fn, "__func__", fn)
    try:
        params = _signature_cache(func)
    except TypeError:  # unhashable callables
        params = _signature_uncached(func)
    bound = getattr(fn, "__self__", None) is not None and func is not fn
    return params[1:] if bound and params else params


def _signature_uncached(func: Callable[..., Any]) -> tuple[inspect.Parameter, ...]:
    try:
        return tuple(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return ()


_signature_cache = functools.lru_cache(maxsize=1024)(_signature_uncached)


def _positional_names(fn: Callable[..., Any]) -> list[str]:
    return [
        p.name
        for p in _parameters(fn)
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


class LayerAccess(ABC):
    """What the checker needs from a layer. Subclass it in a `pytest_gradcheck_adapt` hook.

    The checker calls, in order: `force_train_mode()` once, `forward()` repeatedly,
    `parameters()` after the first forward (so lazily created parameters exist), and
    `backward()` once after a forward on unperturbed values.
    """

    label: str = "layer"

    def input_names(self, n: int) -> list[str]:
        """Names for the report rows of the n positional inputs."""
        return [f"input{i}" for i in range(n)] if n > 1 else ["input"]

    def state_roots(self) -> list[Any]:
        """Objects whose state must be the same before every evaluation and after the check."""
        return []

    def force_train_mode(self) -> list[str]:
        """Switch to training / batch-statistics behaviour; return what was switched."""
        return []

    @abstractmethod
    def forward(self, inputs: Sequence[Any]) -> Any:
        """Run the layer on `inputs`; return its output array."""

    @abstractmethod
    def backward(self, dout: np.ndarray) -> Sequence[Any]:
        """Input gradients, one entry per input (None where there is none)."""

    def parameters(self) -> list[Param]:
        return []

    def random_sources(self) -> list[Any]:
        """Random streams besides those reachable from `state_roots()`."""
        return []

    def loss_terms(self) -> list[Callable[[], float]]:
        """Extra terms of the objective whose gradient the layer adds itself."""
        return []

    def fixed_inputs(self) -> Collection[int]:
        """Positions of float inputs that have no gradient by design (data a loss is computed
        on): held fixed and listed as not differentiated. Asked after the first forward."""
        return ()

    def notes(self) -> list[str]:
        """What the report should say about how the adapter read the code (a gradient it
        assigned to an argument by shape, say); asked once, when the verdicts are in."""
        return []

    def tree_inputs(self, args: Sequence[Any]) -> Collection[int]:
        """Positions of arguments that are structures of values to check (a dict or list of
        parameters, a Python float): each float leaf is checked on its own row, named by its
        path (`parameters.W1`), its gradient at the same place in the argument's gradient (or
        under the `d`-prefixed key). Asked once, before the first forward, with the user's
        arguments; none by default."""
        return ()

    def outside_bindings(self) -> Sequence[Pointer]:
        """Places outside the checked code whose values are parameters (`params=` pointing at
        module globals, closure cells, containers): the checker puts back the very object
        found at each, and its bits, after the check; none by default."""
        return ()

    def bind(self, args: Sequence[Any]) -> None:
        """Called once before training mode is forced, with the working copies of the
        arguments forward will be called with (a function pair finds its mode dicts there)."""
        return None

    def extra_loss_args(self, obj: Any) -> tuple[Any, ...]:
        """What the `extra_loss` option's callable receives: the layer (`obj` is what was
        passed to the check, for an access that keeps no `layer` of its own)."""
        return (getattr(self, "layer", obj),)


class ObjectAccess(LayerAccess):
    """A layer object with `forward`/`backward`, possibly holding sub-layers.

    Conventions for parameters, sub-layers, train mode and random sources come from the hooks,
    whose built-in implementations live in `conventions.py`.
    """

    def __init__(self, layer: Any, hook: Any, label: str | None = None) -> None:
        self.layer = layer
        self.hook = hook
        self.label = label or layer_label(layer)
        self.tree = self._walk(layer, "")
        self._forward_kwargs = self._train_keywords(layer.forward)
        # Parameter gradients backward returned (`return dx, grads`), and the top-level
        # parameters a returned tuple of them is matched with.
        self._returned: Any = None
        self._trainable: list[str] = []
        self._top_names: set[str] = set()
        # The float arrays in the tree's attributes before the check and after the first two
        # forwards: an attribute forward rebinds on every call is state, not a parameter.
        self._arrays_seen: list[dict[tuple[str, str], Any]] = [self._float_attrs()]

    def _walk(self, obj: Any, path: str) -> list[tuple[str, Any]]:
        found = [(path, obj)]
        seen = {id(obj)}
        stack = [(path, obj)]
        while stack:
            p, o = stack.pop()
            children = self.hook.pytest_gradcheck_sublayers(layer=o) or []
            for name, child in children:
                if id(child) in seen:
                    continue
                seen.add(id(child))
                cp = f"{p}.{name}" if p else str(name)
                found.append((cp, child))
                stack.append((cp, child))
        return found

    @staticmethod
    def _train_keywords(fn: Callable[..., Any]) -> dict[str, Any]:
        names = {p.name for p in _parameters(fn)}
        return {k: v for k, v in TRAIN_KEYWORDS.items() if k in names}

    def input_names(self, n: int) -> list[str]:
        names = [
            p for p in _positional_names(self.layer.forward) if p not in self._forward_kwargs
        ]
        if len(names) >= n:
            return names[:n]
        return super().input_names(n)

    def state_roots(self) -> list[Any]:
        return [self.layer]

    def force_train_mode(self) -> list[str]:
        forced = [f"forward({k}={v!r})" for k, v in self._forward_kwargs.items()]
        for path, obj in self.tree:
            for what in self.hook.pytest_gradcheck_train_mode(layer=obj):
                forced.extend(f"{path}.{w}" if path else w for w in what)
        return forced

    def _call_forward(self, inputs: Sequence[Any]) -> Any:
        out = self.layer.forward(*inputs, **self._forward_kwargs)
        if len(self._arrays_seen) < 3:
            self._arrays_seen.append(self._float_attrs())
        return out

    def forward(self, inputs: Sequence[Any]) -> Any:
        out = self._call_forward(inputs)
        if out is None:
            out = real_attr(self.layer, "output")
            if out is None:
                raise GradcheckUsageError(
                    f"{self.label}: forward returned None and set no `output` attribute; "
                    "return the output array, or set self.output"
                )
        elif isinstance(out, tuple):
            floats = [o for o in out if is_float_array(o)]
            if len(floats) == 1:  # integer and bool outputs (argmax indices) get no gradient
                return floats[0]
            raise GradcheckUsageError(
                f"{self.label}: forward returned a tuple of {len(out)} but backward takes one "
                "gradient; for several outputs backward takes one gradient per output "
                "(backward(dh, dc)), for (out, cache) backward(dout, cache); for cs231n-style "
                "functions pass the pair: check((layer_forward, layer_backward), *args)"
            )
        return out

    def backward(self, dout: np.ndarray) -> Sequence[Any]:
        return self._input_grads(self.layer.backward(dout))

    def _input_grads(self, res: Any) -> list[Any]:
        """Backward's result as input gradients; parameter gradients it returns last
        (`return dx, grads` with grads a dict or a tuple) are kept for `parameters()`."""
        if isinstance(res, (tuple, list)) and len(res) >= 2 and _param_grads(res[-1]):
            self._keep_returned(res[-1])
            res = res[:-1] if len(res) > 2 else res[0]
        if res is None:
            for attr in INPUT_GRAD_ATTRS:
                res = real_attr(self.layer, attr)
                if res is not None:
                    break
        if isinstance(res, (tuple, list)):
            return list(res)
        return [res]

    def _keep_returned(self, grads: Any) -> None:
        names = self._trainable
        if isinstance(grads, dict):
            unknown = [k for k in grads if k not in names]
            if unknown:
                raise GradcheckUsageError(
                    f"{self.label}: backward returned gradients for {', '.join(map(repr, unknown))}"
                    f", which is no parameter of the layer (its parameters: "
                    f"{', '.join(names) or 'none found'}); key the returned dict like the "
                    "parameter dict"
                )
        elif len(grads) != len(names):
            raise GradcheckUsageError(
                f"{self.label}: backward returned {len(grads)} parameter gradient(s) for "
                f"{len(names)} parameter(s) ({', '.join(names) or 'none found'}); return one "
                "per parameter in that order, or a dict keyed by parameter name"
            )
        self._returned = grads

    def _returned_grad(self, name: str, stored: Callable[[], Any] | None) -> Any:
        returned = self._returned
        if returned is None:
            return stored() if stored is not None else None
        if isinstance(returned, dict):
            return returned.get(name)
        return returned[self._trainable.index(name)] if name in self._trainable else None

    def _float_attrs(self) -> dict[tuple[str, str], Any]:
        return {(path, name): value for path, obj in self.tree
                for name, value in instance_attributes(obj).items() if is_float_array(value)}

    def _per_call_state(self) -> set[int]:
        """The arrays of attributes forward creates afresh on every call (`self.h0 =
        np.zeros_like(x)`): rebound between the first two forwards (or, after only one, between
        the state before the check and the first forward) to a new array that does not carry
        the old one's values. A parameter that forward merely rebinds to a copy of itself
        (`self.W = self.W.astype(x.dtype)`) carries its values over and stays a parameter: a
        wrong gradient of it must fail, never vanish from the rows."""
        seen = self._arrays_seen
        if len(seen) < 2:
            return set()
        a, b = (seen[1], seen[2]) if len(seen) > 2 else (seen[0], seen[1])
        now = self._float_attrs()
        return {id(now[k]) for k in a.keys() & b.keys() & now.keys()
                if a[k] is not b[k] and not _carries(a[k], b[k])}

    def parameters(self) -> list[Param]:
        state = self._per_call_state()
        out = [p for p in self._found_parameters() if id(p.get()) not in state]
        top = [p for p in out if p.name in self._top_names]
        self._trainable = [p.name for p in top if p.differentiable and p.required]
        for p in top:
            p.grad = functools.partial(self._returned_grad, p.name, p.grad)
        return out

    def _found_parameters(self) -> list[Param]:
        out: list[Param] = []
        self._top_names = set()
        for path, obj in self.tree:
            try:
                found = self.hook.pytest_gradcheck_layer_parameters(layer=obj, path=path) or []
            except GradcheckUsageError as exc:
                # Conventions know the sub-layer, not the label of the checked layer.
                if str(exc).startswith(f"{self.label}: "):
                    raise
                raise GradcheckUsageError(f"{self.label}: {exc}") from None
            out.extend(found)
            if not path:
                self._top_names.update(p.name for p in found)
        return out

    def random_sources(self) -> list[Any]:
        sources: list[Any] = []
        for _, obj in self.tree:
            for found in self.hook.pytest_gradcheck_random_sources(layer=obj):
                sources.extend(found)
        return sources

    def loss_terms(self) -> list[Callable[[], float]]:
        layer = self.layer
        terms: list[Callable[[], float]] = []
        for fns in self.hook.pytest_gradcheck_loss_terms(layer=layer):
            terms.extend(functools.partial(_call_term, f, layer) for f in fns)
        return terms


def _param_grads(value: Any) -> bool:
    """True for what a backward returns as parameter gradients after the input gradient: a
    dict, or a tuple/list of arrays (`return dx, (dW, db)`)."""
    if isinstance(value, dict):
        return True
    return isinstance(value, (tuple, list)) and bool(value) and all(
        isinstance(v, np.ndarray) or v is None for v in value
    )


def _call_term(term: Callable[[Any], float], layer: Any) -> float:
    return float(term(layer))


def _carries(old: np.ndarray, new: np.ndarray) -> bool:
    """Whether a rebound array holds the previous binding's values: a nonzero array equal bit
    for bit to the one it replaced (a fresh all-zero state looks the same every call)."""
    if old.shape != new.shape:
        return False
    new = np.asarray(new, dtype=old.dtype)
    # The first element settles most cases (a cached input rebound to the next call's input):
    # runs twice per check, where two tobytes() copies of a big cached input cost milliseconds.
    first = (0,) * old.ndim
    if old.size and old[first].tobytes() != new[first].tobytes():
        return False
    return bool(np.any(new)) and same_bits(old, new)
