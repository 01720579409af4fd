"""A character-level RNN written as a min-char-rnn learner writes it (our own version): the
weights are module globals, and `lossFun(inputs, targets, hprev)` returns the loss, the
gradients of the weights in order, and the last hidden state."""

from __future__ import annotations

from typing import Any

import numpy as np

hidden_size, vocab_size = 5, 4
_rng = np.random.default_rng(3)
Wxh = _rng.normal(size=(hidden_size, vocab_size)) * 0.3
Whh = _rng.normal(size=(hidden_size, hidden_size)) * 0.3
Why = _rng.normal(size=(vocab_size, hidden_size)) * 0.3
bh = _rng.normal(size=(hidden_size, 1)) * 0.1
by = _rng.normal(size=(vocab_size, 1)) * 0.1


def lossFun(inputs: list[int], targets: list[int], hprev: np.ndarray,
            slip: bool = False) -> tuple[Any, ...]:
    xs: dict[int, np.ndarray] = {}
    hs: dict[int, np.ndarray] = {-1: np.copy(hprev)}
    ps: dict[int, np.ndarray] = {}
    loss = 0.0
    for t in range(len(inputs)):
        xs[t] = np.zeros((vocab_size, 1))
        xs[t][inputs[t]] = 1
        hs[t] = np.tanh(np.dot(Wxh, xs[t]) + np.dot(Whh, hs[t - 1]) + bh)
        ys = np.dot(Why, hs[t]) + by
        ps[t] = np.exp(ys) / np.sum(np.exp(ys))
        loss += -np.log(ps[t][targets[t], 0])
    dWxh, dWhh, dWhy = np.zeros_like(Wxh), np.zeros_like(Whh), np.zeros_like(Why)
    dbh, dby = np.zeros_like(bh), np.zeros_like(by)
    dhnext = np.zeros_like(hs[0])
    for t in reversed(range(len(inputs))):
        dy = np.copy(ps[t])
        dy[targets[t]] -= 1
        dWhy += np.dot(dy, hs[t].T)
        if slip:
            dby = dy  # bug: keeps the first step's only, should be dby += dy
        else:
            dby += dy
        dh = np.dot(Why.T, dy) + dhnext
        dhraw = (1 - hs[t] * hs[t]) * dh
        dbh += dhraw
        dWxh += np.dot(dhraw, xs[t].T)
        dWhh += np.dot(dhraw, hs[t - 1].T)
        dhnext = np.dot(Whh.T, dhraw)
    return loss, dWxh, dWhh, dWhy, dbh, dby, hs[len(inputs) - 1]


def lossFun_wrong(inputs: list[int], targets: list[int], hprev: np.ndarray) -> tuple[Any, ...]:
    return lossFun(inputs, targets, hprev, slip=True)
