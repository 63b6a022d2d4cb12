import numpy as np
import pytest
from strata.errors import InputError, LayersError, ModelIntegrityError
from strata.quantize.search import ResidualCodebooks

torch = pytest.importorskip("torch")
from strata.train.quantize.rvq import ResidualVQ, RVQConfig  # noqa: E402


@pytest.fixture(scope="module")
def rvq():
    torch.manual_seed(0)
    q = ResidualVQ(RVQConfig(layers=4, codebook_size=32, dim=6))
    q.init_kmeans(torch.randn(4000, 6))
    return q.eval()


def test_numpy_search_matches_torch(rvq):
    z = torch.randn(2, 6, 5, 7)
    out = rvq(z, 4)
    books = ResidualCodebooks(rvq.codebooks().numpy())
    codes = books.encode(z.numpy())
    np.testing.assert_array_equal(codes, out.codes.numpy())
    np.testing.assert_allclose(books.decode(codes), out.quantized.detach().numpy(), atol=1e-5)


def test_prefix_property_and_error_decreases(rvq):
    books = ResidualCodebooks(rvq.codebooks().numpy())
    z = np.random.default_rng(1).normal(size=(1, 6, 16, 16)).astype(np.float32)
    codes = books.encode(z)
    errors = []
    for k in range(1, 5):
        np.testing.assert_array_equal(books.encode(z, k), codes[:k])
        errors.append(float(((books.decode(codes[:k]) - z) ** 2).mean()))
    assert errors == sorted(errors, reverse=True)


def test_quantizer_dropout_only_uses_active_layers(rvq):
    out = rvq(torch.randn(1, 6, 3, 3), 2)
    assert out.codes.shape == (2, 1, 3, 3)
    with pytest.raises(ValueError):
        rvq(torch.randn(1, 6, 3, 3), 5)


def test_ema_update_and_dead_code_reset():
    torch.manual_seed(0)
    q = ResidualVQ(RVQConfig(layers=1, codebook_size=8, dim=2, decay=0.5, dead_threshold=0.5))
    q.init_kmeans(torch.randn(500, 2))
    q.embed[0, 7] = 1e3  # a code nobody will use
    q.train()
    for _ in range(10):
        q(torch.randn(4, 2, 8, 8), 1)
    assert q.embed[0, 7].abs().max() < 100  # reset to a data vector


def test_errors(rvq):
    books = ResidualCodebooks(rvq.codebooks().numpy())
    with pytest.raises(LayersError):
        books.encode(np.zeros((1, 6, 2, 2), np.float32), 5)
    with pytest.raises(InputError):
        books.encode(np.zeros((1, 5, 2, 2), np.float32))
    with pytest.raises(InputError):
        books.decode(np.full((1, 1, 2, 2), 32))
    with pytest.raises(ModelIntegrityError):
        ResidualCodebooks(np.zeros((2, 3), np.float32))
    with pytest.raises(ModelIntegrityError):
        ResidualCodebooks(np.full((1, 2, 3), np.nan, np.float32))
