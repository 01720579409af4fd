"""Synthetic data sets generated on the fly (nothing is downloaded)."""

from __future__ import annotations

import numpy as np

__all__ = ["make_spirals"]


def make_spirals(
    n_per_class: int = 100,
    n_classes: int = 3,
    noise: float = 0.2,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Interleaved 2-D spiral arms, one per class, in shuffled order.

    Each arm winds outward from the origin; ``noise`` is the standard
    deviation of Gaussian jitter added to the angle (radians), so the arms
    blur into each other near the centre and as ``noise`` grows.
    Returns ``X`` float64 ``(N, 2)`` and ``y`` int64 ``(N,)`` with
    ``N = n_per_class * n_classes``.
    """
    if n_per_class < 1 or n_classes < 1:
        raise ValueError("n_per_class and n_classes must be positive")
    rng = np.random.default_rng() if rng is None else rng
    radius = np.linspace(0.05, 1.0, n_per_class)
    xs, ys = [], []
    for k in range(n_classes):
        # Arms start evenly spaced around the circle and each makes ~0.8 turn.
        angle = 2 * np.pi * (k / n_classes + 0.8 * radius)
        angle = angle + noise * rng.standard_normal(n_per_class)
        xs.append(np.column_stack([radius * np.cos(angle), radius * np.sin(angle)]))
        ys.append(np.full(n_per_class, k, dtype=np.int64))
    X = np.concatenate(xs).astype(np.float64)
    y = np.concatenate(ys)
    # Shuffle so that any contiguous slice is a fair train/test split.
    order = rng.permutation(len(y))
    return X[order], y[order]
