"""Parameter containers as trees: any nesting of mappings, lists and tuples, walked to its leaves.

A leaf is addressed by its path of keys and indices from the container; the container is looked
up again on every read (layers rebind their dicts in backward), and a gradient is found at the
same path in the gradient container, or under the `d`-prefixed key (`dW1` for `W1`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

Key = str | int
Path = tuple[Key, ...]
MISSING = object()


def leaves(tree: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    """Every leaf under `tree` with its path, containers in their own order."""
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            yield from leaves(v, (*path, k))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            yield from leaves(v, (*path, i))
    else:
        yield path, tree


def is_container(value: Any) -> bool:
    return isinstance(value, (Mapping, list, tuple))


def lookup(tree: Any, path: Path) -> Any:
    """The value at `path`, or MISSING."""
    node = tree
    for key in path:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return MISSING
    return node


def can_assign(tree: Any, path: Path) -> bool:
    """Whether the leaf at `path` can be rebound where it lives (a dict or list holds it; a
    tuple or a read-only mapping does not)."""
    parent = lookup(tree, path[:-1])
    return bool(path) and isinstance(parent, (MutableMapping, list))


def assign(tree: Any, path: Path, value: Any) -> None:
    lookup(tree, path[:-1])[path[-1]] = value


def gradient_at(grads: Any, path: Path) -> Any:
    """The gradient of the leaf at `path`: the same path in `grads`, or the `d`-prefixed key
    in place of the last one (`grads["dW1"]` for `params["W1"]`); None where neither is."""
    found = lookup(grads, path)
    if found is MISSING and path and isinstance(path[-1], str):
        found = lookup(grads, (*path[:-1], f"d{path[-1]}"))
    return None if found is MISSING else found


def subscript(path: Path) -> str:
    """`['W']` or `[0]['W']`: the path as Python subscripts, for messages."""
    return "".join(f"[{key!r}]" for key in path)


def path_name(root: str, path: Path, bare: bool) -> str:
    """`W` or `layer1.W` under a mapping root (`bare`), `weights[0]` or `params[0].W` under a
    sequence root."""
    name = "" if bare else root
    for key in path:
        if isinstance(key, int):
            name += f"[{key}]"
        else:
            name += f".{key}" if name else str(key)
    return name
