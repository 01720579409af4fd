"""Loss functions returning ``(loss, gradient w.r.t. the prediction)``.

Each is a value-and-gradient function ``f(prediction, target) -> (loss, dprediction)``: the
gradient is that of the returned loss with respect to the first argument only (labels and
targets are data). Each carries a ``gradcheck_case`` attribute, ``lambda rng: args``, with
example arguments, as function pairs declare theirs.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mse", "softmax_cross_entropy"]


def softmax_cross_entropy(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(``logits``) against integer labels ``y``.

    ``logits`` has shape ``(N, C)`` and ``y`` shape ``(N,)`` with values in
    ``[0, C)``. Returns the batch-mean loss and ``dloss/dlogits``.
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, C), got shape {logits.shape}")
    y = np.asarray(y)
    n, c = logits.shape
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must be integer labels of shape ({n},), got {y.dtype} {y.shape}")
    if n and (y.min() < 0 or y.max() >= c):
        raise ValueError(f"labels must lie in [0, {c})")
    # Log-softmax via the shifted log-sum-exp: no overflow, and no log(0)
    # for confidently wrong predictions.
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(n)
    loss = -log_probs[rows, y].mean()
    dlogits = np.exp(log_probs)
    dlogits[rows, y] -= 1.0
    return float(loss), dlogits / n


def mse(pred: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean squared error over all elements, and its gradient w.r.t. ``pred``."""
    if pred.shape != np.shape(target):
        # Refuse to broadcast: a silently broadcast target is a classic bug.
        raise ValueError(f"shape mismatch: pred {pred.shape} vs target {np.shape(target)}")
    diff = pred - target
    return float(np.mean(diff**2)), 2.0 * diff / diff.size


# Example arguments for ``python -m pytest_gradcheck example_nn``: logits away from ties,
# labels covering several classes.
softmax_cross_entropy.gradcheck_case = lambda rng: (  # type: ignore[attr-defined]
    rng.normal(size=(6, 4)),
    rng.integers(0, 4, size=6),
)
mse.gradcheck_case = lambda rng: (  # type: ignore[attr-defined]
    rng.normal(size=(5, 3)),
    rng.normal(size=(5, 3)),
)
