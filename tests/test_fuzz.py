"""A bounded slice of the fuzz harness (tests/fuzz): mutated streams, payloads and media files raise only
the codec's own errors (the service's 4xx), never anything else. ``bench/fuzz.py`` runs millions."""

from __future__ import annotations

import contextlib
import random

import pytest

from tests.fuzz.harness import build_targets, fuzz, mutate

pytest.importorskip("fastapi")  # the payload parsers live in the server package
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@pytest.fixture(scope="module")
def targets(shipped_registry):
    return build_targets(shipped_registry.root)


NAMES = ["stream", "image-stream", "audio-stream", "npy", "json", "image-file", "sound-file"]


@pytest.mark.parametrize("name", NAMES)
def test_mutated_inputs_raise_only_strata_errors(targets, name):
    target = targets[name]
    assert target.seeds(), f"no seed corpus for {name}"
    out = fuzz(target, 1500, seed=20261206, max_seconds=20)
    assert not out.crashes, out.crashes[0][1]
    assert out.ok >= len(target.seeds())  # the seeds themselves are accepted
    assert sum(out.errors.values()) > 0  # and the mutations do reach the error paths


@pytest.mark.parametrize("name", ["stream", "image-stream", "npy", "json"])
def test_hypothesis_mutations(targets, name):
    """The same mutator driven by hypothesis, which shrinks a failing input to a small one."""
    target = targets[name]
    seeds = target.seeds()

    @settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(seeds), st.randoms(use_true_random=False), st.binary(max_size=64))
    def check(seed: bytes, rng: random.Random, extra: bytes) -> None:
        from strata.errors import StrataError

        with contextlib.suppress(StrataError):
            target.run(mutate(seed, rng, [extra]))

    check()
