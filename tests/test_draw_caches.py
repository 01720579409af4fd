"""Draws kept for reuse give the numbers, and leave the generator where, a fresh draw would."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_gradcheck import directional, search, streams


def fresh_cotangent(seed: int, shape: tuple[int, int]) -> np.ndarray:
    return streams.stream(seed, streams.COTANGENT).standard_normal(shape)


def test_a_kept_cotangent_is_the_fresh_draw_and_read_only() -> None:
    fresh = fresh_cotangent(5, (3, 4))
    first = streams.cotangent(5, (3, 4))
    again = streams.cotangent(5, (3, 4))
    assert again is first
    assert first.tobytes() == fresh.tobytes()
    assert not first.flags.writeable
    # Another seed or shape draws again.
    other = streams.cotangent(6, (3, 4))
    assert other.tobytes() == fresh_cotangent(6, (3, 4)).tobytes()
    assert streams.cotangent(5, (4, 3)).shape == (4, 3)


@pytest.mark.parametrize("n", [1, 7, 1000])
def test_a_kept_direction_is_the_fresh_draw_and_moves_the_generator_alike(n: int) -> None:
    def gen() -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(11))

    ref = gen()
    expected = [directional.direction(ref, n) for _ in range(2)]
    for _ in range(2):  # the first pass draws and keeps, the second copies
        rng = gen()
        got = [directional._cached_direction(rng, n) for _ in range(2)]
        for d, e in zip(got, expected):
            assert d.dtype == np.float32 and d.tobytes() == e.tobytes()
        assert rng.bit_generator.state == ref.bit_generator.state
        # Kept directions are shared read-only; a caller zeroing elements takes its own copy,
        # and zeroing that changes no kept direction.
        assert not got[0].flags.writeable
        own = search.writable(got[0])
        assert own is not got[0]
        own[0] = 0.0
    assert directional._cached_direction(gen(), n).tobytes() == expected[0].tobytes()


BLOCK = directional._BLOCK


@pytest.mark.parametrize("n", [1, 2 * BLOCK - 1, 2 * BLOCK + 1, 5 * BLOCK + 3])
def test_every_element_of_a_direction_is_plus_or_minus_one_plus_its_own_random_bits(n: int) -> None:
    """Each element, the last one of an odd count included, is the sign and mantissa of its
    own 32 random bits under the exponent of 1.0, so 1 <= |d_i| < 2."""
    raw = np.random.Generator(np.random.PCG64(3)).bit_generator.random_raw((n + 1) // 2)
    words = raw.view(np.uint32)[:n]
    rng = np.random.Generator(np.random.PCG64(3))
    d = directional.direction(rng, n)
    assert d.shape == (n,) and d.dtype == np.float32
    assert d.view(np.uint32).tolist() == ((words & 0x807FFFFF) | 0x3F800000).tolist()
    assert np.all((np.abs(d) >= 1.0) & (np.abs(d) < 2.0))
    if n > 1000:  # both signs, about equally often
        assert 0.4 < float(np.mean(d > 0)) < 0.6
