"""Objects with `backprop(x, y)` returning gradient structures (Nielsen's `Network`): the
parameters are the object's containers of float arrays (`weights`, `biases`: lists, tuples,
dicts, any nesting, or a float array), and each structure returned is matched to the container
of the same structure (the same nesting, the same shapes), so `(nabla_b, nabla_w)` goes to
`(biases, weights)` whatever their order.

The objective, the loss `backprop` differentiates:
- `loss=`: `loss(out)` on the output of `feedforward(x)`, returning the value (or `(value,
  dout)`, the gradient unused);
- else a `cost` attribute with `fn(a, y)` (Nielsen's network2 `QuadraticCost`,
  `CrossEntropyCost`): `cost.fn(feedforward(x), y)`;
- else, with `feedforward`: the quadratic cost `0.5 * ||feedforward(x) - y||^2`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import tree
from .access import (
    LayerAccess,
    Param,
    _positional_names,
    instance_attributes,
    layer_label,
    real_attr,
)
from .errors import GradcheckUsageError
from .numeric import is_float_array
from .returns import describe, scalar
from .valuegrad import called, scaled

METHOD = "backprop"
Signature = tuple[tuple[tree.Path, tuple[int, ...]], ...]


def is_backprop_object(obj: Any) -> bool:
    return not isinstance(obj, type) and callable(getattr(obj, METHOD, None))


def signature(value: Any) -> Signature | None:
    """The structure of `value`: each leaf's path and shape; None if a leaf is no float array
    (or no array at all, for the gradients)."""
    found = []
    for path, leaf in tree.leaves(value):
        if not isinstance(leaf, np.ndarray) or leaf.dtype.kind not in "fiu":
            return None
        found.append((path, tuple(leaf.shape)))
    return tuple(found) if found else None


class BackpropAccess(LayerAccess):
    """See the module docstring. The arguments (`x`, `y`) are data, held fixed."""

    def __init__(self, obj: Any, label: str | None = None) -> None:
        self.layer = obj
        self.label = label or layer_label(obj)
        self.loss: Any = None  # the `loss=` option
        self.order: tuple[str, ...] | None = None  # `wrt=`: containers in the order returned
        self._args: Sequence[Any] = ()
        self._matched: dict[str, Any] = {}
        self._note: str | None = None

    def input_names(self, n: int) -> list[str]:
        names = _positional_names(getattr(self.layer, METHOD))
        return names[:n] if len(names) >= n else super().input_names(n)

    def state_roots(self) -> list[Any]:
        return [self.layer]

    def fixed_inputs(self) -> set[int]:
        return set(range(len(self._args)))

    def notes(self) -> list[str]:
        return [self._note] if self._note else []

    def containers(self) -> dict[str, Any]:
        """The object's parameter containers, by attribute, in the object's own order: lists,
        tuples and dicts (any nesting) of float arrays only, and float arrays."""
        found = {}
        for name, value in instance_attributes(self.layer).items():
            if is_float_array(value) or (tree.is_container(value) and all(
                    is_float_array(v) for _, v in tree.leaves(value)) and value):
                found[name] = value
        return found

    # -- the objective -----------------------------------------------------------------------

    def forward(self, inputs: Sequence[Any]) -> Any:
        self._args = inputs
        obj = self.layer
        feed = getattr(obj, "feedforward", None)
        cost = real_attr(obj, "cost")
        if not callable(feed):
            raise GradcheckUsageError(
                f"{self.label}: an object with {METHOD}(x, y) is checked through the loss its "
                "output gives, and it has no feedforward(x) to compute the output: give it "
                "feedforward(x), or check it in the universal form, "
                "check(lambda p: (loss(p), grads(p)), params)"
            )
        if not inputs:
            raise GradcheckUsageError(
                f"{self.label}: pass {METHOD}'s arguments: check(net, x, y)"
            )
        out = called(feed, [inputs[0]], self.label, "feedforward()")
        if self.loss is not None:
            res = called(self.loss, [out], self.label, "loss=")
            value = scalar(res[0] if isinstance(res, (tuple, list)) and len(res) == 2 else res)
            what = "loss="
        elif cost is not None and callable(getattr(cost, "fn", None)):
            value = scalar(called(cost.fn, [out, *inputs[1:2]], self.label, "cost.fn()"))
            what = "cost.fn(a, y)"
        else:
            if len(inputs) < 2:
                raise GradcheckUsageError(
                    f"{self.label}: the quadratic cost needs the target: check(net, x, y)"
                )
            value = np.asarray(0.5 * np.sum((np.asarray(out) - inputs[1]) ** 2))
            what = "the quadratic cost 0.5 * ||feedforward(x) - y||^2"
        if value is None:
            raise GradcheckUsageError(
                f"{self.label}: {what} must give one real number; it gave a "
                f"{type(value).__name__}"
            )
        self._what = what
        return value

    # -- the gradients -----------------------------------------------------------------------

    def backward(self, dout: np.ndarray) -> Sequence[Any]:
        res = called(getattr(self.layer, METHOD), self._args, self.label, f"{METHOD}()")
        scale = float(dout)
        self._matched = {name: _scaled_tree(g, scale)
                         for name, g in self._match(res).items()}
        self._note = f"objective: {self._what}; {METHOD}'s gradients matched by structure: " + \
            ", ".join(f"{name}" for name in self._matched)
        return [None] * len(self._args)

    def _match(self, res: Any) -> dict[str, Any]:
        containers = self.containers()
        sigs = {name: signature(v) for name, v in containers.items()}
        if signature(res) is not None and list(sigs.values()).count(signature(res)) == 1:
            return {next(n for n, s in sigs.items() if s == signature(res)): res}
        if isinstance(res, dict):
            return {k: v for k, v in res.items() if k in containers}
        if not isinstance(res, (tuple, list)):
            raise GradcheckUsageError(
                f"{self.label}: {METHOD}() returned {describe(res)}; it must return gradient "
                f"structures matching the parameter containers ({', '.join(containers)}), "
                "such as (nabla_b, nabla_w)"
            )
        if self.order is not None:
            if len(self.order) != len(res) or any(o not in containers for o in self.order):
                raise GradcheckUsageError(
                    f"{self.label}: wrt={list(self.order)!r} must name, in the order "
                    f"{METHOD}() returns their gradients, {len(res)} of the parameter "
                    f"containers {', '.join(containers)}"
                )
            return dict(zip(self.order, res))
        matched: dict[str, Any] = {}
        for i, g in enumerate(res):
            sig = signature(g)
            fits = [n for n, s in sigs.items() if s == sig and s is not None and n not in matched]
            if len(fits) != 1:
                shapes = "no container" if not fits else " and ".join(fits)
                raise GradcheckUsageError(
                    f"{self.label}: value {i} returned by {METHOD}() matches {shapes} by "
                    f"structure (the containers are {', '.join(containers)}); pass "
                    f"{self._suggest(res, sigs)}"
                )
            matched[fits[0]] = g
        return matched

    @staticmethod
    def _suggest(res: Sequence[Any], sigs: dict[str, Signature | None]) -> str:
        """`wrt=[...]` naming, for each value returned, the first container of its structure
        not named yet, when every value has one; else the rule in words."""
        names: list[str] = []
        for g in res:
            sig = signature(g)
            found = next((n for n, s in sigs.items() if s == sig and n not in names), None)
            if sig is None or found is None:
                return (f"wrt=[the containers, in the order {METHOD}() returns their "
                        "gradients]")
            names.append(found)
        return (f"wrt={names!r} if those are the containers whose gradients it returns, in "
                "that order (the others are then listed as not differentiated)")

    def parameters(self) -> list[Param]:
        """Every leaf of every container; with `wrt=` naming the containers backprop returns
        gradients for, the others (an optimizer's velocities) are listed as not
        differentiated."""
        out = []
        for name, root in self.containers().items():
            for path, _ in tree.leaves(root):
                p = self._param(name, path)
                if self.order is not None and name not in self.order:
                    p.differentiable, p.grad = False, None
                out.append(p)
        return out

    def _param(self, attr: str, path: tree.Path) -> Param:
        obj = self.layer

        def get() -> Any:
            return tree.lookup(getattr(obj, attr), path) if path else getattr(obj, attr)

        def set_(value: Any) -> None:
            if path:
                tree.assign(getattr(obj, attr), path, value)
            else:
                setattr(obj, attr, value)

        def grad() -> Any:
            g = self._matched.get(attr, tree.MISSING)
            found = tree.lookup(g, path) if g is not tree.MISSING else tree.MISSING
            return None if found is tree.MISSING else found

        settable = not path or tree.can_assign(getattr(obj, attr), path)
        return Param(tree.path_name(attr, path, False), get, set_ if settable else None, grad,
                     self.label, grad_source=f"{METHOD}()'s gradient of {attr}")


def _scaled_tree(g: Any, scale: float) -> Any:
    if isinstance(g, dict):
        return {k: _scaled_tree(v, scale) for k, v in g.items()}
    if isinstance(g, (list, tuple)):
        return [_scaled_tree(v, scale) for v in g]
    return scaled(g, scale)
