"""Learned context model (strata.entropy.context): integer inference that is exact, files that are validated,
chunks that round-trip for every layer count, and corrupt chunks that are caught."""

import numpy as np
import pytest
from strata.entropy.coder import decode_layer, decode_stack, encode_stack
from strata.entropy.context import (
    EXP2_FRAC,
    LOGIT_UNIT,
    MAX_DROP,
    WEIGHTS,
    ContextModel,
    LayerNet,
    SourcePlanes,
    probabilities,
)
from strata.entropy.prior import CodePrior
from strata.errors import ChunkCorruptedError, ModelIntegrityError

K = 16


def random_net(layer: int, seed: int, k: int = K, hidden: int = 12, emb_dim: int = 3, big: bool = False) -> LayerNet:
    rng = np.random.default_rng(seed)
    src = [(0, -1, -1), (0, -1, 0), (0, -1, 1)] + ([(1, di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1)]
                                                   if layer >= 1 else [])
    sources = np.array(src, dtype=np.int64)
    n_in = len(src) * emb_dim
    lim = 127 if big else 40

    def w(a: int, b: int) -> np.ndarray:
        return rng.integers(-lim, lim + 1, (a, b)).astype(np.int8)

    return LayerNet(
        sources=sources,
        emb=rng.integers(-lim, lim + 1, (len(src), k + 1, emb_dim)).astype(np.int8),
        weights=(w(n_in, hidden), w(hidden, hidden), w(hidden, k)),
        biases=tuple(rng.integers(-500, 500, n).astype(np.int64) for n in (hidden, hidden, k)),
        requant=np.array([[1 << 20, 28], [1 << 20, 28], [1 << 22, 28]], dtype=np.int64),
        base_source=1 if layer == 0 else 4 + 3,  # the code above, or the parent at the same position
        base=-rng.integers(0, 6 * LOGIT_UNIT, (k + 1, k)).astype(np.int32),
    )


def reference_logits(net: LayerNet, ids: np.ndarray) -> np.ndarray:
    """The documented computation with every sum in int64 (numpy's integer matmul does not go through BLAS)."""
    x = net.emb[np.arange(ids.shape[1])[None, :], ids].reshape(len(ids), -1).astype(np.int64)
    for m in range(2):
        y = (x @ net.weights[m].astype(np.int64)).astype(np.float32)
        y = y * np.float32(net.scale(m)) + (net.biases[m] * net.scale(m) + 0.5).astype(np.float32)
        x = np.clip(np.floor(y), 0, 255).astype(np.int64)
    y = (x @ net.weights[2].astype(np.int64)).astype(np.float32) * np.float32(net.scale(2))
    return y + (net.base + net.biases[2] * net.scale(2)).astype(np.float32)[ids[:, net.base_source]]


@pytest.fixture(scope="module")
def model() -> tuple[CodePrior, ContextModel]:
    rng = np.random.default_rng(0)
    stacks = [rng.integers(0, K, (3, 9, 11)) for _ in range(4)]
    prior = CodePrior.fit(stacks, [K] * 3, ["above", "parent", "parent"])
    return prior, ContextModel((random_net(0, 1), None, random_net(2, 3)))


def test_weight_table():
    j = np.arange(32)
    np.testing.assert_array_equal(EXP2_FRAC, np.round(2.0**30 * 2.0 ** (-j / 32)).astype(np.int64))
    assert WEIGHTS[0] == 2**16 and WEIGHTS[-1] == 1 and len(WEIGHTS) == MAX_DROP + 1
    assert np.all(np.diff(WEIGHTS) <= 0) and np.array_equal(WEIGHTS, np.floor(WEIGHTS))
    exact = 2.0**16 * 2.0 ** (-np.arange(MAX_DROP + 1) / 32)
    assert np.all(exact - WEIGHTS >= 0) and np.all(exact - WEIGHTS < 1.001)


def test_probabilities_rows():
    rng = np.random.default_rng(1)
    logits = rng.integers(-4000, 100, (50, 40)).astype(np.float32)
    logits[0] = 0  # flat
    logits[1, 5] = 10**6  # one symbol far above the rest: the others get the smallest weight
    p = probabilities(logits)
    assert p.dtype == np.float64 and p.min() > 0
    np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(p[0], np.float32(1 / 40))  # float32 division, then widened
    assert p[1, 5] == pytest.approx(2**16 / (2**16 + 39)) and p[1, 0] == pytest.approx(1 / (2**16 + 39))
    for row, lg in zip(p[2:], logits[2:], strict=True):  # a larger logit never has a smaller probability
        order = np.argsort(lg, kind="stable")
        assert np.all(np.diff(row[order]) >= 0)
    np.testing.assert_array_equal(probabilities(logits[2:] + 0.25), p[2:])  # drops are truncated


@pytest.mark.parametrize("big", [False, True])
def test_network_equals_its_pure_integer_reference(big):
    net = random_net(1, 5, big=big, hidden=64, emb_dim=8)
    rng = np.random.default_rng(2)
    ids = rng.integers(0, K + 1, (300, len(net.sources)))
    np.testing.assert_array_equal(net.logits(ids), reference_logits(net, ids))
    stacked = ContextModel((random_net(0, 4, big=big, hidden=64, emb_dim=8), net)).stacked(2)
    ids2 = rng.integers(0, K + 1, (2, 30, len(stacked.sources)))
    merged = [tuple(r) for r in stacked.sources.tolist()]
    own = [merged.index(tuple(r)) for r in net.sources.tolist()]
    np.testing.assert_array_equal(stacked.logits(1, ids2[1:])[0], net.logits(ids2[1][:, own]))


def test_file_round_trip_and_validation(model, tmp_path):
    _, ctx = model
    path = tmp_path / "context.npz"
    ctx.save(path)
    back = ContextModel.load(path)
    assert back.nets[1] is None
    ids = np.random.default_rng(3).integers(0, K + 1, (20, len(ctx.nets[2].sources)))
    np.testing.assert_array_equal(back.nets[2].logits(ids), ctx.nets[2].logits(ids))
    with pytest.raises(ModelIntegrityError, match="unreadable"):
        ContextModel.from_bytes(b"not a zip")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.pop("w1_2")
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    with pytest.raises(ModelIntegrityError, match="w1_2"):
        ContextModel.load(bad)


def test_malformed_networks_are_refused():
    good = random_net(1, 7)
    fields = {f: getattr(good, f) for f in ("sources", "emb", "weights", "biases", "requant", "base_source", "base")}
    same_row = good.sources.copy()
    same_row[0] = (0, 0, -1)  # the code to the left in the same row: not known when a row decodes at once
    with pytest.raises(ModelIntegrityError, match="row above"):
        LayerNet(**{**fields, "sources": same_row})
    with pytest.raises(ModelIntegrityError, match="int8"):
        LayerNet(**{**fields, "emb": good.emb.astype(np.int16)})
    with pytest.raises(ModelIntegrityError, match="base"):
        LayerNet(**{**fields, "base": -good.base})
    wide_emb = np.full((len(good.sources), K + 1, 100), 127, dtype=np.int8)  # sums up to 1200 x 127 x 127 > 2**24
    wide_w0 = np.full((len(good.sources) * 100, good.hidden[0]), -127, dtype=np.int8)
    with pytest.raises(ModelIntegrityError, match="not exact in float32"):
        LayerNet(**{**fields, "emb": wide_emb, "weights": (wide_w0, *good.weights[1:])})
    with pytest.raises(ModelIntegrityError, match="codes"):
        ContextModel((good, good, good)).check_against([K, K, 2 * K])


def test_chunks_round_trip_for_every_layer_count(model):
    prior, ctx = model
    rng = np.random.default_rng(4)
    for shape in ((1, 1), (1, 13), (7, 1), (9, 11), (40, 3)):
        codes = rng.integers(0, K, (3, *shape))
        chunks = encode_stack(prior, codes, ctx)
        assert chunks != encode_stack(prior, codes) or codes.size <= 2
        for k in range(1, 4):
            np.testing.assert_array_equal(decode_stack(prior, chunks[:k], shape, ctx), codes[:k])


def test_encoder_blocks_do_not_change_the_bytes(model, monkeypatch):
    import strata.entropy.coder as coder

    prior, ctx = model
    codes = np.random.default_rng(5).integers(0, K, (3, 30, 7))
    whole = encode_stack(prior, codes, ctx)
    monkeypatch.setattr(coder, "ENCODE_BLOCK", 10)  # two rows per block
    assert encode_stack(prior, codes, ctx) == whole


def test_coded_size_matches_the_model_cross_entropy(model):
    prior, ctx = model
    codes = np.random.default_rng(6).integers(0, K, (3, 40, 40))
    chunks = encode_stack(prior, codes, ctx)
    ce = ctx.cross_entropy_bits(codes)
    assert np.isnan(ce[1])
    for layer in (0, 2):
        assert 8 * len(chunks[layer]) == pytest.approx(ce[layer], rel=0.01, abs=64)


def test_corrupt_chunks_are_caught(model):
    prior, ctx = model
    codes = np.random.default_rng(7).integers(0, K, (3, 12, 12))
    chunks = encode_stack(prior, codes, ctx)
    caught = 0
    for pos in range(0, len(chunks[2]), 3):
        bad = bytearray(chunks[2])
        bad[pos] ^= 0x5A
        try:
            out = decode_layer(prior, 2, bytes(bad), (12, 12), codes[:2], ctx)
        except ChunkCorruptedError:
            caught += 1
        else:
            assert out.shape == (12, 12) and out.min() >= 0 and out.max() < K
    assert caught > 0
    with pytest.raises(ChunkCorruptedError):
        decode_layer(prior, 2, chunks[2][:-4], (12, 12), codes[:2], ctx)
    with pytest.raises(ChunkCorruptedError):
        decode_layer(prior, 2, chunks[2] + b"\0\0\0\1", (12, 12), codes[:2], ctx)
    with pytest.raises(ValueError, match="outside"):
        decode_layer(prior, 2, chunks[2], (12, 12), np.full((2, 12, 12), K), ctx)


def test_source_planes_read_the_right_codes():
    codes = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    sources = np.array([(0, -1, 0), (1, 1, 1), (2, 0, 0)])
    planes = SourcePlanes(sources, 99, 1, codes, (3, 4))
    ids = planes.ids(0, 3).reshape(3, 4, 3)
    assert ids[0, 0, 0] == 99 and ids[1, 2, 0] == codes[1, 0, 2]  # above, row 0 has none
    assert ids[0, 0, 1] == codes[0, 1, 1] and ids[2, 3, 1] == 99  # the parent one down and right
    assert np.all(ids[..., 2] == 99)  # layer -1 does not exist


def test_wavefront_decoding_equals_layer_by_layer():
    """With a network on every layer, decode_stack runs all layers in one wavefront; it must give exactly the
    codes of the layer-by-layer decoder, for every layer count, and catch a corrupt chunk."""
    rng = np.random.default_rng(8)
    stacks = [rng.integers(0, K, (3, 9, 11)) for _ in range(4)]
    prior = CodePrior.fit(stacks, [K] * 3, ["above", "parent", "parent"])
    ctx = ContextModel((random_net(0, 11), random_net(1, 12), random_net(2, 13)))
    assert ctx.stacked(3) is not None and ctx.stacked(3).lag == 2
    for shape in ((1, 1), (2, 5), (13, 4)):
        codes = rng.integers(0, K, (3, *shape))
        chunks = encode_stack(prior, codes, ctx)
        for k in range(1, 4):
            out = decode_stack(prior, chunks[:k], shape, ctx)
            np.testing.assert_array_equal(out, codes[:k])
            one = np.zeros_like(out)
            for layer in range(k):
                one[layer] = decode_layer(prior, layer, chunks[layer], shape, one[:layer], ctx)
            np.testing.assert_array_equal(one, out)
    bad = list(chunks)
    bad[1] = bad[1] + b"\x01\0\0\0"
    with pytest.raises(ChunkCorruptedError, match="layer 1"):
        decode_stack(prior, bad, shape, ctx)
