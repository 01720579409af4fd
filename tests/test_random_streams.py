"""Every random stream comes from (seed, purpose, keys): `pytest_gradcheck.streams`."""

from __future__ import annotations

import random

import numpy as np
import pytest

from example_nn import Linear
from pytest_gradcheck import check, streams
from pytest_gradcheck.discovery import case_rng
from pytest_gradcheck.sources import SeededGlobalNumpy, SeededGlobalPython


def draws(gen: np.random.Generator) -> list[float]:
    return gen.standard_normal(4).tolist()


def test_a_stream_depends_on_seed_purpose_and_keys_only() -> None:
    a = draws(streams.stream(3, streams.COTANGENT, 7))
    assert a == draws(streams.stream(3, streams.COTANGENT, 7))
    assert a != draws(streams.stream(4, streams.COTANGENT, 7))
    assert a != draws(streams.stream(3, streams.COTANGENT, 8))
    assert a != draws(streams.stream(3, streams.NOISE_PROBE, 7))


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_no_purpose_shares_numbers_with_another_or_with_default_rng_of_the_seed(seed: int) -> None:
    # Inputs a test drew with default_rng(seed) must not equal the cotangent: x.T @ g would be
    # symmetric and a transposed weight gradient would pass.
    seen = {tuple(draws(np.random.default_rng(seed)))}
    for purpose in streams.PURPOSES:
        seen.add(tuple(draws(streams.stream(seed, purpose))))
    assert len(seen) == len(streams.PURPOSES) + 1


def test_an_unknown_purpose_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown random stream purpose 'dropout'"):
        streams.stream(0, "dropout")


def test_keyed_streams_depend_on_the_name_not_on_the_order_of_requests() -> None:
    one = streams.KeyedStreams(5, streams.ARRAY_CHOICES)
    w_first = draws(one.stream("W"))
    b_second = draws(one.stream("b"))
    other = streams.KeyedStreams(5, streams.ARRAY_CHOICES)
    assert draws(other.stream("b")) == b_second
    assert draws(other.stream("W")) == w_first
    assert w_first != b_second


def test_discovery_cases_come_from_the_seed_and_the_target_name() -> None:
    assert draws(case_rng(2, "pkg.Linear")) == draws(case_rng(2, "pkg.Linear"))
    assert draws(case_rng(2, "pkg.Linear")) != draws(case_rng(2, "pkg.Tanh"))
    assert draws(case_rng(2, "pkg.Linear")) != draws(case_rng(3, "pkg.Linear"))


def test_global_streams_during_a_check_are_those_seeded_with_the_check_seed() -> None:
    # The README promises it: np.random.seed(seed) reproduces what a layer drew by hand.
    np_global, py_global = SeededGlobalNumpy(11), SeededGlobalPython(11)
    try:
        during = (np.random.random(), random.random())
    finally:
        py_global.give_back()
        np_global.give_back()
    np.random.seed(11)
    random.seed(11)
    assert during == (np.random.random(), random.random())


def test_transposed_weight_gradient_is_caught_with_inputs_from_default_rng_of_the_seed() -> None:
    class Transposed(Linear):
        def backward(self, dout: np.ndarray) -> np.ndarray:
            dx = super().backward(dout)
            self.grads["W"] = self.grads["W"].T.copy()
            return dx

    x = np.random.default_rng(0).standard_normal((4, 4))
    layer = Transposed(4, 4, rng=np.random.default_rng(1))
    assert not check(layer, x, seed=0).ok
