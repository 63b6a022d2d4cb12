"""Entropy prior (codec.entropy.prior) and ANS layer coder (codec.entropy.coder)."""

from __future__ import annotations

import io
import time
import zipfile

import numpy as np
import pytest
from strata.entropy.coder import decode_layer, decode_stack, encode_layer, encode_stack, format_report, measure
from strata.entropy.prior import KIND_IDS, TOTAL, CodePrior, LayerPrior, layer_contexts, quantize_probabilities
from strata.errors import ChunkCorruptedError, ModelIntegrityError

L, H, W, K = 8, 64, 96, 256
MIXED = ["above", "parent", "none", "parent", "above", "parent", "parent", "none"]


def synth_stack(rng: np.random.Generator, layers: int = L, h: int = H, w: int = W, k: int = K) -> np.ndarray:
    """Skewed, context-dependent codes ``[layers, h, w]`` (int64).

    Layer 0 is a Markov chain down each column (often a near-copy of the code above); layer
    ``l >= 1`` is, 60 % of the time, a near-deterministic function of its parent code. All
    draws use a Zipf-like marginal, fixed across calls.
    """
    base = 1.0 / (np.arange(k) + 4.0) ** 1.2
    base = (base / base.sum())[np.random.default_rng(1234).permutation(k)]
    codes = np.empty((layers, h, w), dtype=np.int64)
    draw = rng.choice(k, size=(h, w), p=base)
    copy = rng.random((h, w)) < 0.55
    jitter = rng.integers(-2, 3, size=(h, w))
    codes[0, 0] = draw[0]
    for i in range(1, h):
        codes[0, i] = np.where(copy[i], (codes[0, i - 1] + jitter[i]) % k, draw[i])
    for layer in range(1, layers):
        specific = (codes[layer - 1] * 37 + 11 * layer + rng.geometric(0.5, size=(h, w)) - 1) % k
        use = rng.random((h, w)) < 0.6
        codes[layer] = np.where(use, specific, rng.choice(k, size=(h, w), p=base))
    return codes


@pytest.fixture(scope="module")
def data() -> dict[str, object]:
    rng = np.random.default_rng(0)
    return {
        "train": [synth_stack(rng) for _ in range(6)],
        "heldout": [synth_stack(rng) for _ in range(2)],
        "test": synth_stack(rng),
    }


@pytest.fixture(scope="module")
def small() -> dict[str, object]:
    """A small setting (4 layers, K = 16, 12 x 20 grid) for fast exhaustive checks."""
    rng = np.random.default_rng(1)
    return {
        "train": [synth_stack(rng, 4, 12, 20, 16) for _ in range(5)],
        "heldout": [synth_stack(rng, 4, 12, 20, 16)],
        "test": synth_stack(rng, 4, 12, 20, 16),
    }


@pytest.fixture(scope="module")
def prior(data) -> CodePrior:
    return CodePrior.fit(data["train"], [K] * L, ["above"] + ["parent"] * (L - 1), heldout=data["heldout"])


# ---------------------------------------------------------------------------- prior


def test_quantize_probabilities_invariants():
    rng = np.random.default_rng(3)
    p = rng.random((50, 256)) ** 8  # very skewed rows, many tiny entries
    p[0] = 0.0
    p[0, 7] = 1.0  # a one-hot row
    q = quantize_probabilities(p)
    assert q.dtype == np.uint32 and q.shape == p.shape
    assert q.min() >= 1
    assert np.all(q.sum(axis=1, dtype=np.int64) == TOTAL)
    assert q[0, 7] == TOTAL - 255
    np.testing.assert_array_equal(q, quantize_probabilities(p.copy()))  # deterministic
    np.testing.assert_array_equal(quantize_probabilities(p * 3.0), q)  # scale-free
    # Close to the input: every entry within 1 unit of 1 + p * (TOTAL - K).
    pn = p / p.sum(axis=1, keepdims=True)
    assert np.abs(q - (1 + pn * (TOTAL - 256))).max() <= 1.0


def test_layer_prior_validation():
    good = quantize_probabilities(np.ones((3, 16)))
    lp = LayerPrior("parent", good)
    assert lp.num_contexts == 3 and lp.codebook_size == 16
    assert not lp.freqs.flags.writeable
    probs = lp.probabilities()
    assert probs.dtype == np.float64 and probs.shape == (3, 16)
    np.testing.assert_array_equal(probs, good / float(TOTAL))
    bad_sum = good.copy()
    bad_sum[1, 0] += 1
    zero = good.copy()
    zero[0, 0] = 0
    zero[0, 1] += 1
    for kind, freqs in [
        ("nope", good),
        ("none", good.astype(np.int64)),
        ("none", good.astype(np.float64)),
        ("none", good[0]),
        ("none", good[:0]),
        ("none", bad_sum),
        ("none", zero),
        ("none", np.full((1, 1), TOTAL, np.uint32)),
    ]:
        with pytest.raises(ModelIntegrityError):
            LayerPrior(kind, freqs)


def test_code_prior_structure_validation():
    f16 = quantize_probabilities(np.ones((1, 16)))
    with pytest.raises(ModelIntegrityError):
        CodePrior(())
    with pytest.raises(ModelIntegrityError):  # parent on layer 0
        CodePrior((LayerPrior("parent", quantize_probabilities(np.ones((16, 16)))),))
    with pytest.raises(ModelIntegrityError):  # parent needs K_{l-1} = 16 contexts, has 5
        CodePrior((LayerPrior("none", f16), LayerPrior("parent", quantize_probabilities(np.ones((5, 16))))))
    with pytest.raises(ModelIntegrityError):  # above needs K + 1 = 17 contexts
        CodePrior((LayerPrior("above", quantize_probabilities(np.ones((16, 16)))),))
    with pytest.raises(ModelIntegrityError):  # none needs 1 context
        CodePrior((LayerPrior("none", quantize_probabilities(np.ones((2, 16)))),))
    ok = CodePrior(
        (
            LayerPrior("above", quantize_probabilities(np.ones((17, 16)))),
            LayerPrior("parent", quantize_probabilities(np.ones((16, 8)))),
            LayerPrior("parent", quantize_probabilities(np.ones((8, 32)))),
        )
    )
    assert ok.num_layers == len(ok) == 3
    assert ok.codebook_sizes == (16, 8, 32)
    assert ok.kinds == ("above", "parent", "parent")


def test_fit_rejects_bad_arguments(small):
    with pytest.raises(ValueError):
        CodePrior.fit(small["train"], [16] * 4, ["parent"] + ["none"] * 3)
    with pytest.raises(ValueError):
        CodePrior.fit(small["train"], [16] * 4, ["none"] * 3)
    with pytest.raises(ValueError):
        CodePrior.fit(small["train"], [16] * 4, ["sideways"] * 4)
    with pytest.raises(ValueError):
        CodePrior.fit(small["train"], [8] * 4, ["none"] * 4)  # codes >= 8 present


def test_contexts():
    codes = np.arange(2 * 3 * 4).reshape(2, 3, 4) % 5
    prior = CodePrior.fit([codes], [5, 5], ["above", "parent"])
    ctx0 = prior.contexts(0, codes)
    assert ctx0.shape == (3, 4) and ctx0.dtype == np.int64
    np.testing.assert_array_equal(ctx0[0], [5, 5, 5, 5])  # "no neighbour" id K
    np.testing.assert_array_equal(ctx0[1:], codes[0, :-1])
    np.testing.assert_array_equal(prior.contexts(1, codes), codes[0])
    np.testing.assert_array_equal(prior.contexts(1, codes[:1]), codes[0])  # parent needs only the layers below
    np.testing.assert_array_equal(layer_contexts("none", 0, codes, 5), np.zeros((3, 4)))


def test_cross_entropy_matches_probabilities(small, data):
    prior = CodePrior.fit(small["train"], [16] * 4, ["above", "parent", "none", "above"])
    codes = small["test"]
    bits = prior.cross_entropy_bits(codes)
    assert bits.shape == (4,) and bits.dtype == np.float64
    for layer in range(4):
        probs = prior.layers[layer].probabilities()
        ctx = prior.contexts(layer, codes)
        expected = sum(-np.log2(probs[c, s]) for c, s in zip(ctx.ravel(), codes[layer].ravel(), strict=True))
        assert bits[layer] == pytest.approx(expected, rel=1e-12)
    np.testing.assert_array_equal(prior.cross_entropy_bits(codes[:2]), bits[:2])  # a prefix of layers


def test_fit_is_deterministic_and_uses_heldout(small):
    args = (small["train"], [16] * 4, ["above", "parent", "parent", "parent"])
    a = CodePrior.fit(*args, heldout=small["heldout"])
    b = CodePrior.fit(*args, heldout=small["heldout"])
    assert a == b
    default = CodePrior.fit(*args)
    # The tuned back-off is never worse on the held-out data than the default strength.
    for h in small["heldout"]:
        assert a.cross_entropy_bits(h).sum() <= default.cross_entropy_bits(h).sum() + 1e-6


def test_conditional_prior_beats_static(data, prior):
    static = CodePrior.fit_static(data["train"], [K] * L)
    assert static.kinds == ("none",) * L
    cond_bits = prior.cross_entropy_bits(data["test"])
    static_bits = static.cross_entropy_bits(data["test"])
    saved = 1 - cond_bits.sum() / static_bits.sum()
    totals = f"{cond_bits.sum():.0f} vs {static_bits.sum():.0f} bits"
    print(f"\nconditional prior saves {100 * saved:.1f}% vs static ({totals})")
    assert np.all(cond_bits < static_bits)
    assert saved > 0.2
    # ... and so do the coded chunks.
    coded = sum(len(c) for c in encode_stack(prior, data["test"]))
    coded_static = sum(len(c) for c in encode_stack(static, data["test"]))
    assert coded < 0.8 * coded_static


# ---------------------------------------------------------------------------- serialisation


def test_prior_save_load_round_trip(tmp_path, small):
    prior = CodePrior.fit(small["train"], [16] * 4, ["above", "parent", "none", "parent"], heldout=small["heldout"])
    path = tmp_path / "prior.npz"
    prior.save(path)
    with np.load(path, allow_pickle=False) as npz:  # numeric arrays only
        assert sorted(npz.files) == ["format", "freqs_0", "freqs_1", "freqs_2", "freqs_3", "kinds"]
        assert all(npz[key].dtype != object for key in npz.files)
        np.testing.assert_array_equal(npz["kinds"], [KIND_IDS[k] for k in prior.kinds])
    loaded = CodePrior.load(path)
    assert loaded == prior
    assert loaded.kinds == prior.kinds
    for a, b in zip(loaded.layers, prior.layers, strict=True):
        pa, pb = a.probabilities(), b.probabilities()
        assert pa.dtype == pb.dtype == np.float64
        assert pa.tobytes() == pb.tobytes()  # bit-identical
    assert CodePrior.from_bytes(prior.to_bytes()) == prior
    # A stream encoded with one decodes with the other.
    chunks = encode_stack(prior, small["test"])
    np.testing.assert_array_equal(decode_stack(loaded, chunks, (12, 20)), small["test"])


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_malformed_prior_files(tmp_path, small):
    prior = CodePrior.fit(small["train"], [16] * 4, ["above", "parent", "none", "parent"])
    good = dict(prior._arrays())

    def variant(**changes: np.ndarray | None) -> dict[str, np.ndarray]:
        arrays = dict(good)
        for key, value in changes.items():
            if value is None:
                arrays.pop(key)
            else:
                arrays[key] = value
        return arrays

    f1 = good["freqs_1"].copy()
    f1[3, 2] += 1  # row no longer sums to TOTAL
    f3_zero = good["freqs_3"].copy()
    f3_zero[0, :2] = [0, f3_zero[0, 0] + f3_zero[0, 1]]
    cases = {  # name -> arrays
        "missing freqs": variant(freqs_2=None),
        "missing kinds": variant(kinds=None),
        "missing format": variant(format=None),
        "future format": variant(format=np.array([2])),
        "extra entry": variant(extra=np.zeros(3)),
        "bad kind id": variant(kinds=np.array([2, 1, 7, 1], np.uint8)),
        "parent on layer 0": variant(kinds=np.array([1, 1, 0, 1], np.uint8)),
        "kind/contexts mismatch": variant(kinds=np.array([2, 1, 2, 1], np.uint8)),
        "row sum": variant(freqs_1=f1),
        "zero frequency": variant(freqs_3=f3_zero),
        "int64 table": variant(freqs_0=good["freqs_0"].astype(np.int64)),
        "float table": variant(freqs_0=good["freqs_0"].astype(np.float64) / TOTAL),
        "1-D table": variant(freqs_2=good["freqs_2"].ravel()),
        "object array": variant(kinds=np.array(["above", "parent", "none", "parent"], dtype=object)),
    }
    for i, arrays in enumerate(cases.values()):
        blob = _npz(arrays)  # (the object array gets pickled; loading must refuse it)
        path = tmp_path / f"case{i}.npz"
        path.write_bytes(blob)
        with pytest.raises(ModelIntegrityError):
            CodePrior.load(path)
        with pytest.raises(ModelIntegrityError):
            CodePrior.from_bytes(blob)
    # The unmodified arrays load fine (so the cases above fail for their own reason).
    assert CodePrior.from_bytes(_npz(good)) == prior
    # Not an archive at all, a truncated archive, a bare .npy, a missing file.
    blob = prior.to_bytes()
    npy = io.BytesIO()
    np.save(npy, good["freqs_0"])
    for junk in [b"", b"garbage" * 10, blob[: len(blob) // 2], npy.getvalue()]:
        with pytest.raises(ModelIntegrityError):
            CodePrior.from_bytes(junk)
    with pytest.raises(ModelIntegrityError):
        CodePrior.load(tmp_path / "does-not-exist.npz")
    # A zip with a member that is not an .npy file.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("format.npy", b"not an array")
    with pytest.raises(ModelIntegrityError):
        CodePrior.from_bytes(buf.getvalue())


# ---------------------------------------------------------------------------- coder


KIND_SETS = {
    "none": ["none"] * 4,
    "parent": ["none"] + ["parent"] * 3,
    "above": ["above"] * 4,
    "mixed": ["above", "parent", "none", "above"],
    "mixed2": ["none", "above", "parent", "parent"],
}


@pytest.mark.parametrize("kinds", list(KIND_SETS.values()), ids=list(KIND_SETS))
def test_round_trip_all_kinds(small, kinds):
    prior = CodePrior.fit(small["train"], [16] * 4, kinds, heldout=small["heldout"])
    for codes in [small["test"], *small["heldout"]]:
        chunks = encode_stack(prior, codes)
        assert all(isinstance(c, bytes) and len(c) % 4 == 0 for c in chunks)
        decoded = decode_stack(prior, chunks, codes.shape[1:])
        assert decoded.dtype == np.int64
        np.testing.assert_array_equal(decoded, codes)


@pytest.mark.parametrize("kinds", list(KIND_SETS.values()), ids=list(KIND_SETS))
def test_round_trip_unseen_and_extreme_codes(small, kinds):
    """Codes the prior never saw (uniform noise, all-zero, all-max) still round-trip exactly."""
    prior = CodePrior.fit(small["train"], [16] * 4, kinds)
    rng = np.random.default_rng(7)
    for codes in [rng.integers(0, 16, (4, 9, 13)), np.zeros((4, 5, 6), np.int32), np.full((4, 3, 7), 15, np.uint8)]:
        decoded = decode_stack(prior, encode_stack(prior, codes), codes.shape[1:])
        np.testing.assert_array_equal(decoded, codes)


def test_layer_by_layer_decode(data, prior):
    codes = data["test"]
    chunks = [encode_layer(prior, layer, codes[: layer + 1]) for layer in range(L)]  # only layers <= l given
    assert chunks == encode_stack(prior, codes)
    decoded = np.zeros((0, H, W), dtype=np.int64)
    for layer in range(L):
        plane = decode_layer(prior, layer, chunks[layer], (H, W), decoded)
        assert plane.shape == (H, W) and plane.dtype == np.int64
        np.testing.assert_array_equal(plane, codes[layer])
        decoded = np.concatenate([decoded, plane[None]])
    # Any prefix of chunks decodes to the same prefix of layers.
    np.testing.assert_array_equal(decode_stack(prior, chunks[:3], (H, W)), codes[:3])


def test_encoding_is_deterministic(data, prior):
    codes = data["test"]
    first = encode_stack(prior, codes)
    assert encode_stack(prior, codes) == first
    # A fresh prior object (no cached models) gives the same bytes, and so does a reloaded one.
    assert encode_stack(CodePrior.from_bytes(prior.to_bytes()), codes) == first
    assert encode_stack(prior, codes.astype(np.int32)) == first


def test_empty_grid(small):
    prior = CodePrior.fit(small["train"], [16] * 4, ["above", "parent", "none", "parent"])
    codes = np.zeros((4, 0, 5), np.int64)
    chunks = encode_stack(prior, codes)
    assert chunks == [b""] * 4
    assert decode_stack(prior, chunks, (0, 5)).shape == (4, 0, 5)
    with pytest.raises(ChunkCorruptedError):
        decode_layer(prior, 0, b"\x01\x00\x00\x00", (0, 5), codes[:0])


def test_encode_rejects_bad_codes(small):
    prior = CodePrior.fit(small["train"], [16] * 4, ["above", "parent", "none", "parent"])
    codes = small["test"].copy()
    codes[1, 2, 3] = 16
    with pytest.raises(ValueError):
        encode_layer(prior, 1, codes)
    with pytest.raises(ValueError):
        encode_layer(prior, 4, small["test"])
    with pytest.raises(ValueError):
        encode_layer(prior, 2, small["test"][:2])
    with pytest.raises(ValueError):
        encode_layer(prior, 0, small["test"].astype(np.float32))
    with pytest.raises(ValueError):  # lower layers of the wrong grid
        decode_layer(prior, 1, b"", (12, 20), np.zeros((1, 12, 21), np.int64))


def test_efficiency_within_one_percent_of_cross_entropy(data, prior):
    """Coded bits <= 1.01 * cross-entropy + 64 per layer, on realistic 8 x 64 x 96, K = 256 stacks."""
    static = CodePrior.fit_static(data["train"], [K] * L)
    mixed = CodePrior.fit(data["train"], [K] * L, MIXED, heldout=data["heldout"])
    for name, p in [("conditional", prior), ("static", static), ("mixed", mixed)]:
        reports = measure(p, data["test"])
        print(f"\n{name} prior:\n{format_report(reports)}")
        for r in reports:
            assert r.coded_bits <= 1.01 * r.cross_entropy_bits + 64, r
        total_ce = sum(r.cross_entropy_bits for r in reports)
        total_coded = sum(r.coded_bits for r in reports)
        assert total_coded <= 1.01 * total_ce


def test_garbage_and_bit_flips(small):
    """Corrupt chunks raise ChunkCorruptedError or decode to an in-range array; nothing else."""
    rng = np.random.default_rng(11)
    shape = small["test"].shape[1:]
    outcomes = {"corrupted": 0, "decoded": 0}
    for kinds in KIND_SETS.values():
        prior = CodePrior.fit(small["train"], [16] * 4, kinds)
        chunks = encode_stack(prior, small["test"])
        for trial in range(48):
            layer = trial % 4
            good = chunks[layer]
            mode = trial % 6
            if mode == 0:
                data = rng.bytes(4 * int(rng.integers(1, 40)))
            elif mode == 1:
                data = rng.bytes(int(rng.integers(1, 40)) * 4 + int(rng.integers(1, 4)))  # ragged length
            elif mode in (2, 3):
                buf = bytearray(good)
                for _ in range(1 + mode - 2):
                    bit = int(rng.integers(8 * len(buf)))
                    buf[bit // 8] ^= 1 << (bit % 8)
                data = bytes(buf)
            elif mode == 4:
                data = good[:-4] + b"\x00\x00\x00\x00" if good else b"\x00" * 4  # ends in a zero word
            else:
                data = good + rng.bytes(4)  # trailing word
            try:
                out = decode_layer(prior, layer, data, shape, small["test"][:layer])
            except ChunkCorruptedError as exc:
                assert str(exc)
                outcomes["corrupted"] += 1
                continue
            assert out.shape == shape and out.dtype == np.int64
            assert out.min() >= 0 and out.max() < 16
            outcomes["decoded"] += 1
    print(f"\ncorrupted chunks: {outcomes}")
    assert outcomes["corrupted"] > 0.9 * sum(outcomes.values())


def test_large_garbage_is_bounded(data, prior):
    """A megabyte of noise for a 64 x 96 layer is rejected quickly (decoding stops at H * W symbols)."""
    rng = np.random.default_rng(5)
    blob = rng.bytes(1 << 20)
    t0 = time.perf_counter()
    for layer in (0, 1):
        with pytest.raises(ChunkCorruptedError):
            decode_layer(prior, layer, blob, (H, W), data["test"][:layer])
    assert time.perf_counter() - t0 < 2.0


def test_timing_sanity(data, prior):
    codes = data["test"]
    mixed = CodePrior.fit(data["train"], [K] * L, MIXED)
    for name, p in [("above+parent", prior), ("mixed", mixed)]:
        encode_stack(p, codes)  # warm the model cache
        best_enc = best_dec = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            chunks = encode_stack(p, codes)
            t1 = time.perf_counter()
            decoded = decode_stack(p, chunks, (H, W))
            t2 = time.perf_counter()
            best_enc, best_dec = min(best_enc, t1 - t0), min(best_dec, t2 - t1)
        np.testing.assert_array_equal(decoded, codes)
        print(f"\n{name}: 8x64x96 encode {1e3 * best_enc:.1f} ms, decode {1e3 * best_dec:.1f} ms")
        assert best_enc + best_dec < 0.5
