"""Every random stream a check draws from, derived from the check's seed and a named purpose.

One seed fixes a whole run: the cotangent, the elements sampled and the directions taken per
array, the noise probe, the example cases of discovered targets, and the global streams a layer
may draw from. Each purpose mixes its own tag into the seed sequence, so two purposes never share
numbers with each other, nor with `default_rng(seed)` itself: inputs a test drew with
`default_rng(0)` would otherwise equal the cotangent at seed 0, making `x.T @ g` symmetric and
hiding a transposed gradient.

A purpose's tag is its name's ASCII bytes read as one integer ("grad" is 0x67726164); the names
are kept short because they fix the numbers every existing seed reproduces.
"""

from __future__ import annotations

import zlib
from functools import lru_cache

import numpy as np

# Purposes. Changing a name changes every number drawn for that purpose at every seed.
COTANGENT = "grad"  # the random output gradient g of the objective sum(g * out)
NOISE_PROBE = "nois"  # the directions along which the objective's noise is measured
ARRAY_CHOICES = "modes"  # per checked array: sample mode's elements, fast mode's directions
DISCOVERY_CASE = "case"  # the `rng` handed to `pytest_gradcheck_make_case`, per target
DECOY = "dcoy"  # the decoy forward's inputs and the random states it starts from
POINT = "pnt"  # the seed of each further point of a check with points > 1

PURPOSES = (COTANGENT, NOISE_PROBE, ARRAY_CHOICES, DISCOVERY_CASE, DECOY, POINT)


def tag(purpose: str) -> int:
    """The integer mixed into the seed sequence for `purpose`."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown random stream purpose {purpose!r}; one of {PURPOSES}")
    return int.from_bytes(purpose.encode("ascii"), "big")


def key(name: str) -> int:
    """A 32-bit key for a name (an array's, a target's): stable across runs and processes,
    unlike `hash()`."""
    return zlib.crc32(name.encode())


def seed_sequence(seed: int, purpose: str, *extra: int) -> np.random.SeedSequence:
    return _seed_sequence(int(seed), purpose, tuple(int(e) for e in extra))


# A SeedSequence is a pure function of its entropy, and building one hashes it (a check builds
# several): kept per (seed, purpose, extra). Nothing here spawns from them, the one method that
# changes one; PCG64 only reads generate_state.
@lru_cache(maxsize=256)
def _seed_sequence(seed: int, purpose: str, extra: tuple[int, ...]) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, tag(purpose), *extra])


def stream(seed: int, purpose: str, *extra: int) -> np.random.Generator:
    """A fresh generator for `purpose` at `seed` (and `extra` keys, e.g. `key(name)`)."""
    return np.random.Generator(np.random.PCG64(seed_sequence(seed, purpose, *extra)))


# The last cotangent drawn, read-only: (seed, shape, array). Drawing one (standard_normal) costs
# as much as a bare forward of a small layer; checks at one seed
# often repeat an output shape. Up to this many elements (32 MB) one is kept.
_COTANGENT_LIMIT = 1 << 22
_last_cotangent: tuple[int, tuple[int, ...], np.ndarray] | None = None


def cotangent(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """The cotangent at `seed` for an output of `shape`: `stream(seed, COTANGENT)`'s standard
    normals, the same numbers whether drawn now or kept from the last call. Read-only: callers
    hand backward a copy.

    Normals rather than the cheaper +-(1+u) of fast-mode directions: fast mode's error estimate
    grows with the mean |g| and a wrong element's share with the RMS of g, and normals give the
    larger ratio (one element of a million-element dW off by 0.01% was caught in 20 of 30 seeds,
    against 17 with +-(1+u))."""
    global _last_cotangent
    seed, shape = int(seed), tuple(int(n) for n in shape)
    last = _last_cotangent
    if last is not None and last[0] == seed and last[1] == shape:
        return last[2]
    g = stream(seed, COTANGENT).standard_normal(shape)
    g.flags.writeable = False
    if g.size <= _COTANGENT_LIMIT:
        _last_cotangent = (seed, shape, g)
    return g


def forget_kept_draws() -> None:
    """Drop the cotangent and seed sequences kept from earlier checks (benchmarks call it to
    time a check as the first of its kind pays for it; the numbers drawn are the same)."""
    global _last_cotangent
    _last_cotangent = None
    _seed_sequence.cache_clear()


def global_seed(seed: int) -> int:
    """What numpy's global RNG and Python's `random` are seeded with during a check.

    The check's seed itself, on purpose: a layer drawing from the global streams then sees what
    it would after `np.random.seed(seed)` / `random.seed(seed)`, so a failure reproduces by hand
    (the README promises it), and `np.random.seed(int)` is the cheap reset of the global stream
    before every evaluation.
    """
    return int(seed)


class KeyedStreams:
    """Streams for one purpose, one per name, depending on (seed, purpose, name) alone.

    So the elements sampled or the direction taken for an array do not change when other
    arrays are added or left out (params=...), and a failure reproduces from the seed. The
    stream of a name is one PCG64 stream jumped ahead by key(name) * 2**96 draws (disjoint for
    any realistic use), cheaper per name than a fresh `stream(seed, purpose, key(name))`.
    """

    STRIDE = 1 << 96

    def __init__(self, seed: int, purpose: str) -> None:
        self.bit_generator = np.random.PCG64(seed_sequence(seed, purpose))
        self.start = self.bit_generator.state
        self.generator = np.random.Generator(self.bit_generator)

    def stream(self, name: str) -> np.random.Generator:
        """The generator positioned at the start of `name`'s stream. It is one generator,
        reused: draw from it before asking for the next name's stream."""
        self.bit_generator.state = self.start
        self.bit_generator.advance(key(name) * self.STRIDE)
        return self.generator
