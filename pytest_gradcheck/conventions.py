"""Built-in layer conventions, as ordinary (trylast) implementations of our hookspecs."""

from __future__ import annotations

import inspect
from collections.abc import Collection
from typing import Any

import numpy as np
import pluggy

from .access import (
    INPUT_GRAD_ATTRS,
    ObjectAccess,
    Param,
    attr_param,
    class_properties,
    instance_attributes,
    is_float_scalar,
    layer_label,
    tree_params,
)
from .backprop import BackpropAccess, is_backprop_object
from .discovery import (
    DECLARATION,
    PAIR,
    Case,
    DiscoveredTarget,
    SkipCase,
    how_to_declare,
    kind_of,
    to_case,
)
from .errors import GradcheckUsageError
from .numeric import is_float_array as _is_float_array
from .pairs import FunctionPairAccess, LossPairAccess, is_loss_pair
from .shapes import (
    MethodLayerAccess,
    ModelLossAccess,
    OwnLossNetworkAccess,
    backward_signature,
    method_style,
    own_loss,
    required_positional,
    takes_varargs,
)
from .tree import is_container
from .valuegrad import ValueAndGradAccess

hookimpl = pluggy.HookimplMarker("pytest")

# (parameter dict, gradient dict) attribute pairs.
DICT_CONVENTIONS = (("params", "grads"), ("parameters", "gradients"))
# Attribute names that are parameters even before backward has created their gradient.
KNOWN_PARAM_ATTRS = ("W", "b", "gamma", "beta", "weights", "biases", "weight", "bias")
# Spellings of the gradient attribute of parameter attribute `p`.
GRAD_SPELLINGS = ("d{}", "grad_{}", "{}_grad", "d_{}")
# Arrays a forward pass caches for backward, never parameters even when a `d<name>` exists.
CACHE_ATTRS = ("inputs", "input", "x", "X", "output", "out", "outputs", "cache", "mask")
# Boolean attributes meaning "training mode", and string `mode` values meaning "not training".
TRAIN_FLAGS = ("training", "train", "is_training", "train_mode")
NON_TRAIN_MODES = ("test", "eval", "inference", "predict")


def is_layer(obj: Any) -> bool:
    return callable(getattr(obj, "forward", None)) and callable(getattr(obj, "backward", None))


def is_model(obj: Any) -> bool:
    """An object with a `loss` method and no forward/backward (cs231n `model.loss(X, y)`)."""
    return not isinstance(obj, type) and not is_layer(obj) and inspect.ismethod(
        getattr(obj, "loss", None)
    )


def is_value_and_grad(obj: Any) -> bool:
    """A plain callable: checked as `f(*args) -> (loss, grads)` (its return value decides)."""
    return (callable(obj) and not isinstance(obj, (type, tuple)) and not is_layer(obj)
            and not is_model(obj))


@hookimpl(trylast=True)
def pytest_gradcheck_adapt(obj: Any, label: str | None, hook: Any) -> Any:
    """Which shape an object is: a `(forward_fn, backward_fn)` pair; an object with forward
    and backward is a layer, or a network through its own loss when backward takes the output
    and the targets and a `loss` object computes them; an object with a `loss` method is a
    model; one with `backprop(x, y)` a Nielsen-style network; any other callable a
    value-and-gradient function."""
    if (
        isinstance(obj, tuple)
        and len(obj) == 2
        and all(callable(f) for f in obj)
        and not is_layer(obj[0])
    ):
        access = (LossPairAccess(obj[0], obj[1]) if is_loss_pair(obj[0], obj[1])
                  else FunctionPairAccess(obj[0], obj[1]))
        if label:
            access.label = label
        return access
    if is_layer(obj) and not isinstance(obj, type):
        if own_loss(obj) is not None:
            return OwnLossNetworkAccess(obj, hook, label)
        backward = backward_signature(obj)
        if len(required_positional(backward)) < 2 and not takes_varargs(backward):
            return ObjectAccess(obj, hook, label)
        style = method_style(obj)
        if style is None:
            names = ", ".join(required_positional(backward))
            raise GradcheckUsageError(
                f"{label or layer_label(obj)}: cannot tell what backward({names}) takes: "
                "recognised are backward(douts...) (one gradient per output, named like dout, "
                "dy, grad_...), backward(x, dy) (inputs, then gradients) and "
                "backward(dout, cache); rename the arguments, or implement the "
                "pytest_gradcheck_adapt hook for this convention"
            )
        return MethodLayerAccess(obj, hook, style, label)
    if is_model(obj):
        return ModelLossAccess(obj, hook, label)
    if is_backprop_object(obj):
        return BackpropAccess(obj, label)
    if is_value_and_grad(obj):
        return ValueAndGradAccess(obj, label)
    return None


@hookimpl(trylast=True)
def pytest_gradcheck_sublayers(layer: Any) -> list[tuple[str, Any]]:
    children: list[tuple[str, Any]] = []
    # A layer that is itself a list or dict (`class Seq(list)` with forward/backward) holds its
    # sub-layers as items, named by index or key as the items of a `layers` attribute are.
    if isinstance(layer, (list, tuple)) and is_layer(layer):
        children.extend((str(i), v) for i, v in enumerate(layer) if is_layer(v))
    elif isinstance(layer, dict) and is_layer(layer):
        children.extend((str(k), v) for k, v in layer.items() if is_layer(v))
    for name, value in instance_attributes(layer).items():
        if isinstance(value, (list, tuple)) and name in ("layers", "modules", "children", "blocks"):
            children.extend((f"{name}.{i}", v) for i, v in enumerate(value) if is_layer(v))
        elif isinstance(value, dict) and name in ("layers", "modules", "children", "blocks"):
            children.extend((f"{name}.{k}", v) for k, v in value.items() if is_layer(v))
        elif is_layer(value) and not isinstance(value, type):
            children.append((name, value))
    return children


def _grad_attr(names: Collection[str], pname: str) -> str | None:
    for spelling in GRAD_SPELLINGS:
        g = spelling.format(pname)
        if g in names:
            return g
    return None


@hookimpl(trylast=True)
def pytest_gradcheck_layer_parameters(layer: Any, path: str) -> list[Param]:
    prefix = f"{path}." if path else ""
    label = type(layer).__name__
    attrs = instance_attributes(layer)
    for pattr, gattr in DICT_CONVENTIONS:
        container = attrs.get(pattr)
        if is_container(container) and container:
            # Any nesting of dicts, mappings, lists and tuples; every float leaf is a parameter
            # whose gradient sits at the same place in the gradient container.
            return tree_params(layer, pattr, gattr, prefix, label)
    props = class_properties(layer)
    names = attrs.keys() | props.keys()
    for name in props:
        attrs.pop(name, None)  # a property shadows an instance entry of the same name
    attrs.update(_property_values(layer, props, names))
    found = []
    for name, value in attrs.items():
        if name in CACHE_ATTRS:
            continue
        if is_container(value) or is_float_scalar(value):
            # A list or dict of parameters beside its gradients' (`weights`/`dweights`), or a
            # scalar beside its gradient (`alpha`/`dalpha`): only with the gradient attribute,
            # as a layer's hyperparameters (lr, momentum) have none.
            grad_name = _grad_attr(names, name)
            if grad_name is not None and not _is_gradient_name(name, names):
                if is_container(value):
                    found.extend(tree_params(layer, name, grad_name, prefix, label))
                else:
                    found.append(attr_param(f"{prefix}{name}", layer, name, grad_name, label))
            continue
        if not _is_float_array(value):
            continue
        grad_name = _grad_attr(names, name)
        if grad_name is None and name in KNOWN_PARAM_ATTRS:
            grad_name = GRAD_SPELLINGS[0].format(name)  # expected to appear after backward
        if grad_name is not None and not _is_gradient_name(name, names):
            prop = props.get(name)
            if prop is not None:
                _require_stored_array(layer, prop, name, value)
            settable = prop is None or prop.fset is not None
            found.append(attr_param(f"{prefix}{name}", layer, name, grad_name, label, settable))
    return found


def _property_values(
    layer: Any, props: dict[str, property], names: Collection[str]
) -> dict[str, Any]:
    """Values of the properties that may be parameters: named like one, or with a gradient
    attribute beside them. Other properties are never called (they may be expensive or have
    effects); one that raises is no parameter."""
    values = {}
    for name, prop in props.items():
        if prop.fget is None or name in CACHE_ATTRS:
            continue
        if name not in KNOWN_PARAM_ATTRS and _grad_attr(names, name) is None:
            continue
        try:
            values[name] = prop.fget(layer)
        except Exception:
            continue
    return values


def _require_stored_array(layer: Any, prop: property, name: str, value: np.ndarray) -> None:
    """A property parameter is perturbed through the array it returns; one that hands out a new
    array on every read (a copy, a cast) would be perturbed without forward ever seeing it."""
    try:
        again = prop.fget(layer) if prop.fget is not None else value
    except Exception:
        again = None
    if value.size and not (isinstance(again, np.ndarray) and np.may_share_memory(value, again)):
        cls = type(layer).__name__
        raise GradcheckUsageError(
            f"parameter {name!r} is a property of {cls} that returns a new array on every read, "
            f"so the check cannot perturb the array forward uses: return the stored array from "
            f"{cls}.{name} (and give the property a setter to let the check swap in a float64 "
            "copy)"
        )


def _is_gradient_name(name: str, attrs: Collection[str]) -> bool:
    """True if `name` is itself the gradient of another attribute (dW next to W)."""
    if name in INPUT_GRAD_ATTRS:
        return True
    for spelling in GRAD_SPELLINGS:
        head, _, tail = spelling.partition("{}")
        if name.startswith(head) and name.endswith(tail) and len(name) > len(head) + len(tail):
            base = name[len(head) : len(name) - len(tail)]
            if base in attrs:
                return True
    return False


@hookimpl(trylast=True)
def pytest_gradcheck_train_mode(layer: Any) -> list[str]:
    switched = []
    attrs = instance_attributes(layer)
    for flag in TRAIN_FLAGS:
        if isinstance(attrs.get(flag), (bool, np.bool_)) and not attrs[flag]:
            setattr(layer, flag, True)
            switched.append(f"{flag}=True")
    mode = attrs.get("mode")
    if isinstance(mode, str) and mode.lower() in NON_TRAIN_MODES:
        layer.mode = "train"
        switched.append("mode='train'")
    # cs231n: `bn_param`/`dropout_param` dicts, and models' lists of them (`bn_params`).
    for holder, value in attrs.items():
        if holder.endswith("_param") and isinstance(value, dict):
            dicts = [("", value)]
        elif holder.endswith("_params") and isinstance(value, (list, tuple)):
            dicts = [(f"[{i}]", d) for i, d in enumerate(value) if isinstance(d, dict)]
        else:
            continue
        for where, d in dicts:
            if d.get("mode", "train") != "train":
                d["mode"] = "train"
                switched.append(f"{holder}{where}['mode']='train'")
    return switched


@hookimpl(trylast=True)
def pytest_gradcheck_random_sources(layer: Any) -> list[Any]:
    return []


@hookimpl(trylast=True)
def pytest_gradcheck_loss_terms(layer: Any) -> list[Any]:
    return []


@hookimpl(trylast=True)
def pytest_gradcheck_make_case(target: Any, name: str, rng: np.random.Generator) -> Case:
    """Read the target's `gradcheck_case` declaration; skip (with the fix) if it has none.

    Layer classes declare a classmethod `gradcheck_case(cls, rng)`; function pairs an attribute
    `X_forward.gradcheck_case = lambda rng: (args...)` on the forward function.
    """
    kind = kind_of(target)
    t = DiscoveredTarget(name, kind, target)
    holder = target[0] if kind == PAIR else target
    declare = getattr(holder, DECLARATION, None)
    if declare is None:
        raise SkipCase(f"no {DECLARATION} declaration: {how_to_declare(t)}")
    if not callable(declare):
        raise GradcheckUsageError(
            f"{name}: {DECLARATION} must be callable as {DECLARATION}(rng), got "
            f"{type(declare).__name__}"
        )
    if inspect.isclass(holder) and inspect.isfunction(inspect.getattr_static(holder, DECLARATION)):
        raise GradcheckUsageError(
            f"{name}: {DECLARATION} is a plain method; decorate it with @classmethod so it "
            f"is called as {DECLARATION}(cls, rng) without an instance"
        )
    return to_case(declare(rng), t)
