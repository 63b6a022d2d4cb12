"""The HR-VQ, RSQ and two-scale quantizer families: torch training modules, numpy inference, the image trainer."""

import json

import numpy as np
import pytest
from strata.errors import InputError, LayersError, ModelIntegrityError
from strata.quantize.search import ResidualCodebooks
from strata.quantize.tree import TreeCodebooks

from tests.conftest import png_bytes, synthetic_image

torch = pytest.importorskip("torch")
from strata.train.image import ImageTrainConfig, train  # noqa: E402
from strata.train.nets.image import ImageNetConfig  # noqa: E402
from strata.train.quantize.families import build_quantizer, inference_codebooks, quantizer_loss  # noqa: E402
from strata.train.quantize.hrvq import HierarchicalResidualVQ, HRVQConfig  # noqa: E402
from strata.train.quantize.rsq import ResidualSQ, RSQConfig  # noqa: E402
from strata.train.quantize.rvq import RVQConfig  # noqa: E402
from strata.train.quantize.topbottom import TopBottomConfig, TopBottomVQ  # noqa: E402


@pytest.fixture(scope="module")
def hrvq():
    torch.manual_seed(0)
    q = HierarchicalResidualVQ(HRVQConfig(layers=4, codebook_size=8, dim=6))
    q.init_kmeans(torch.randn(3000, 6))
    return q.eval()


@pytest.fixture(scope="module")
def rsq():
    torch.manual_seed(0)
    q = ResidualSQ(RSQConfig(layers=3, codebook_size=16, dim=6))
    q.init_kmeans(torch.randn(3000, 6))
    return q.eval()


def brute_force_tree(root, children, z, k):
    """Per-position, per-layer reference search: the parent's codebook, every code tried."""
    B, D, H, W = z.shape
    flat = z.transpose(0, 2, 3, 1).reshape(-1, D).astype(np.float64)
    codes = np.empty((k, len(flat)), np.int64)
    for n, r in enumerate(flat):
        r = r.copy()
        parent = None
        for layer in range(k):
            book = root if layer == 0 else children[layer - 1][parent]
            c = int(np.argmin(((r[None, :] - book) ** 2).sum(1)))
            codes[layer, n] = c
            r -= book[c]
            parent = c
    return codes.reshape(k, B, H, W)


# --- HR-VQ ---------------------------------------------------------------------------------------------------


def test_hrvq_numpy_tree_search_matches_torch(hrvq):
    z = torch.randn(2, 6, 5, 7)
    out = hrvq(z, 4)
    books = inference_codebooks(hrvq)
    assert isinstance(books, TreeCodebooks) and books.layers == 4 and books.dim == 6
    codes = books.encode(z.numpy())
    np.testing.assert_array_equal(codes, out.codes.numpy())
    np.testing.assert_allclose(books.decode(codes), out.quantized.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(hrvq.decode(out.codes).detach().numpy(), books.decode(codes), atol=1e-6)


def test_tree_encode_leaves_a_channels_last_latent_alone(hrvq):
    books = inference_codebooks(hrvq)
    nhwc = np.random.default_rng(4).normal(size=(2, 5, 7, 6)).astype(np.float32)
    latent = nhwc.transpose(0, 3, 1, 2)  # [B, D, H, W] view of channels-last memory
    before = latent.copy()
    codes = books.encode(latent)
    np.testing.assert_array_equal(latent, before)
    np.testing.assert_array_equal(codes, books.encode(before))


def test_hrvq_search_equals_brute_force_per_parent_search():
    rng = np.random.default_rng(3)
    K, D = 5, 3
    root = rng.normal(size=(K, D)).astype(np.float32)
    children = (rng.normal(size=(3, K, K, D)) * np.array([0.5, 0.25, 0.12])[:, None, None, None]).astype(np.float32)
    books = TreeCodebooks(root, children)
    z = rng.normal(size=(2, D, 6, 5)).astype(np.float32)
    np.testing.assert_array_equal(books.encode(z), brute_force_tree(root, children, z, 4))
    np.testing.assert_array_equal(books.encode(z, 2), brute_force_tree(root, children, z, 2))


def test_hrvq_child_codebook_is_selected_by_the_parent():
    """Two parents whose child codebooks differ: the same residual gets different codes."""
    root = np.array([[0.0, 0.0], [10.0, 0.0]], np.float32)
    children = np.array([[[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]]], np.float32)  # [1, 2, 2, 2]
    books = TreeCodebooks(root, children)
    z = np.array([[0.9, 0.1], [10.9, 0.1]], np.float32).T.reshape(1, 2, 1, 2)
    codes = books.encode(z)
    assert codes[:, 0, 0].tolist() == [[0, 1], [0, 1]]  # parent 0 → child 0 = (1,0); parent 1 → child 1 = (1,0)
    np.testing.assert_allclose(books.decode(codes)[0, :, 0], [[1.0, 11.0], [0.0, 0.0]])


def test_hrvq_prefix_decodes_and_error_decreases(hrvq):
    books = inference_codebooks(hrvq)
    z = np.random.default_rng(1).normal(size=(1, 6, 16, 16)).astype(np.float32)
    codes = books.encode(z)
    errors = []
    for k in range(1, 5):
        np.testing.assert_array_equal(books.encode(z, k), codes[:k])
        np.testing.assert_allclose(books.decode(codes[:k]), hrvq.decode(torch.from_numpy(codes[:k])).detach().numpy(),
                                   atol=1e-6)
        errors.append(float(((books.decode(codes[:k]) - z) ** 2).mean()))
    assert errors == sorted(errors, reverse=True)


def test_hrvq_objective_gradients_reach_encoder_and_used_codebooks():
    torch.manual_seed(0)
    q = HierarchicalResidualVQ(HRVQConfig(layers=3, codebook_size=4, dim=5))
    q.init_kmeans(torch.randn(500, 5))
    q.train()
    z = torch.randn(2, 5, 4, 4, requires_grad=True)
    out = q(z, 3)
    (out.quantized.square().mean() + out.commit_loss).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert q.root.grad.abs().sum() > 0
    used = q.children_books.grad.abs().sum(-1) > 0  # [L-1, K, K]: only the (parent, child) pairs used
    codes = out.codes.flatten(1)
    for layer in (1, 2):
        expected = torch.zeros(4, 4, dtype=torch.bool)
        expected[codes[layer - 1], codes[layer]] = True
        assert torch.equal(used[layer - 1], expected)
    assert out.commit_loss > 0 and out.codes.shape == (3, 2, 4, 4)


def test_hrvq_keep_layers_and_layer_bounds(hrvq):
    q = HierarchicalResidualVQ(HRVQConfig(layers=3, codebook_size=4, dim=2))
    q.keep_layers(2)
    assert q.layers == 2 and q.codebooks()[1].shape == (1, 4, 4, 2)
    with pytest.raises(ValueError):
        q(torch.randn(1, 2, 2, 2), 3)
    with pytest.raises(ValueError):
        q.keep_layers(0)


def test_hrvq_default_model_stays_small():
    q = HierarchicalResidualVQ(HRVQConfig())
    floats = sum(p.numel() for p in q.parameters())
    assert floats * 4 < 5e6  # under 5 MB in float32


def test_tree_codebooks_errors(hrvq):
    books = inference_codebooks(hrvq)
    with pytest.raises(LayersError):
        books.encode(np.zeros((1, 6, 2, 2), np.float32), 5)
    with pytest.raises(LayersError):
        books.encode(np.zeros((1, 6, 2, 2), np.float32), 0)
    with pytest.raises(InputError):
        books.encode(np.zeros((1, 5, 2, 2), np.float32))
    with pytest.raises(InputError):
        books.encode(np.full((1, 6, 2, 2), np.nan, np.float32))
    with pytest.raises(InputError):
        books.decode(np.full((1, 1, 2, 2), 8))
    with pytest.raises(InputError):
        books.decode(np.zeros((1, 1, 2, 2), np.float32))
    with pytest.raises(LayersError):
        books.decode(np.zeros((5, 1, 2, 2), np.int64))
    root, children = books.root, books.children
    with pytest.raises(ModelIntegrityError):
        TreeCodebooks(root, children[:, :3])
    with pytest.raises(ModelIntegrityError):
        TreeCodebooks(root.astype(np.float64), children)
    with pytest.raises(ModelIntegrityError):
        TreeCodebooks(root, np.full_like(children, np.inf))


# --- RSQ -----------------------------------------------------------------------------------------------------


def test_rsq_inference_is_nearest_code_residual_search(rsq):
    z = torch.randn(2, 6, 5, 7)
    out = rsq(z, 3)
    books = inference_codebooks(rsq)
    assert isinstance(books, ResidualCodebooks)
    codes = books.encode(z.numpy())
    np.testing.assert_array_equal(codes, out.codes.numpy())
    np.testing.assert_allclose(books.decode(codes), out.quantized.detach().numpy(), atol=1e-5)
    # the same as an explicit nearest-code residual search in float64
    flat = z.numpy().transpose(0, 2, 3, 1).reshape(-1, 6).astype(np.float64)
    for layer, book in enumerate(rsq.codebooks().numpy().astype(np.float64)):
        idx = ((flat[:, None, :] - book[None]) ** 2).sum(-1).argmin(1)
        np.testing.assert_array_equal(idx, codes[layer].reshape(-1))
        flat = flat - book[idx]


def test_rsq_prefix_decodes(rsq):
    books = inference_codebooks(rsq)
    z = np.random.default_rng(2).normal(size=(1, 6, 8, 8)).astype(np.float32)
    codes = books.encode(z)
    for k in range(1, 4):
        np.testing.assert_array_equal(books.encode(z, k), codes[:k])
        np.testing.assert_allclose(rsq(torch.from_numpy(z), k).quantized.detach().numpy(), books.decode(codes[:k]),
                                   atol=1e-5)


def test_rsq_training_gradients_and_temperature():
    torch.manual_seed(0)
    q = ResidualSQ(RSQConfig(layers=2, codebook_size=8, dim=4, temperature_decay=0.1))
    q.init_kmeans(torch.randn(400, 4))
    q.train()
    assert q.temperature() == 1.0
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = q(z, 2)
    mse = out.quantized.square().mean()
    loss = mse + quantizer_loss(out, mse, 192.0)
    loss.backward()
    assert z.grad.abs().sum() > 0
    assert (q.embed.grad.abs().sum(-1) > 0).all()  # relaxed samples: every code gets gradient (no dead codes)
    assert q.log_s2.grad.abs().sum() > 0
    assert out.entropy.shape == (2,) and (out.entropy > 0).all()
    assert int(q.step) == 1 and q.temperature() == pytest.approx(np.exp(-0.1))
    q(z.detach(), 1)
    assert q.temperature() == pytest.approx(np.exp(-0.2))
    q.eval()
    q(z.detach(), 1)
    assert int(q.step) == 2  # eval does not advance the schedule
    assert ResidualSQ(RSQConfig(temperature_min=0.5, temperature_decay=1.0)).temperature() == 1.0


def test_rsq_variance_stays_positive_under_training():
    torch.manual_seed(0)
    q = ResidualSQ(RSQConfig(layers=2, codebook_size=8, dim=4))
    q.init_kmeans(torch.randn(400, 4))
    q.train()
    opt = torch.optim.SGD(q.parameters(), lr=50.0)  # huge steps that would push a raw variance negative
    for _ in range(20):
        out = q(torch.randn(4, 4, 4, 4), 2)
        loss = quantizer_loss(out, torch.tensor(1e-2), 3.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.isfinite(q.s2).all() and (q.s2 > 0).all()


def test_rsq_kmeans_sets_decreasing_variances(rsq):
    s2 = rsq.s2.detach()
    assert (s2 > 0).all() and (s2[1:] < s2[:-1]).all()


# --- the image trainer -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    for split, seeds in (("train", range(3)), ("val", range(3, 5))):
        (root / "images" / split).mkdir(parents=True)
        for s in seeds:
            (root / "images" / split / f"{s}.png").write_bytes(png_bytes(synthetic_image(48, 64, s)))
    return root / "images"


def tiny_config(data, steps: int, family: str) -> ImageTrainConfig:
    return ImageTrainConfig(
        data=str(data), steps=steps, batch=2, crop=32, eval_every=2, val_crop=32, threads=1, amp=False,
        net=ImageNetConfig(latent_dim=4, channels=(4, 4, 8), enc_blocks=(1, 1, 1), dec_blocks=(1, 1, 1)),
        quantizer=family, hrvq=HRVQConfig(layers=3, codebook_size=4, dim=4),
        rsq=RSQConfig(layers=3, codebook_size=8, dim=4),
        topbottom=TopBottomConfig(top_layers=1, bottom_layers=2, codebook_size=8, dim=4, top_dim=6),
    )


@pytest.mark.parametrize("family", ["hrvq", "rsq", "topbottom", "sq-topbottom"])
def test_image_trainer_smoke(family, data, tmp_path):
    run = tmp_path / family
    train(tiny_config(data, 4, family), run)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4]
    assert all(np.isfinite(r["train_loss"]) for r in log) and [r["skipped_steps"] for r in log] == [0, 0]
    assert len(log[-1]["psnr"]) == 3 and len(log[-1]["perplexity"]) == 3
    saved = json.loads((run / "config.json").read_text())
    assert saved["quantizer"] == family and ImageTrainConfig.from_dict(saved).quantizer_config.layers == 3
    state = torch.load(run / "last.pt", weights_only=False)["model"]
    if family == "rsq":
        assert int(state["quantizer.step"]) == 4 and (state["quantizer.log_s2"].exp() > 0).all()
    if "topbottom" in family:  # the top level's two-times coarser grid costs a quarter of a bottom layer's bits
        bits = np.diff([0.0, *log[-1]["bpp_static"]])
        assert bits[0] < 0.5 * max(bits[1:])
    train(tiny_config(data, 6, family), run, resume=True)
    assert torch.load(run / "last.pt", weights_only=False)["step"] == 6


def test_old_config_dicts_load_as_rvq():
    old = ImageTrainConfig().to_dict()
    for key in ("quantizer", "hrvq", "rsq"):
        del old[key]
    old["net"] = {"latent_dim": 32, "channels": [64, 128, 192], "enc_blocks": [1, 1, 1], "dec_blocks": [1, 2, 3]}
    cfg = ImageTrainConfig.from_dict(old)
    assert cfg.quantizer == "rvq" and cfg.quantizer_config == RVQConfig()
    assert type(build_quantizer(cfg.quantizer_config)).__name__ == "ResidualVQ"
    again = ImageTrainConfig.from_dict(json.loads(json.dumps(ImageTrainConfig(quantizer="hrvq").to_dict())))
    assert again.quantizer == "hrvq" and again.hrvq == HRVQConfig()
    with pytest.raises(ValueError, match="quantizer"):
        ImageTrainConfig(quantizer="pq")


def test_shipped_image_checkpoint_config_still_loads():
    from strata.train.image import ImageAutoencoder, read_checkpoint

    from tests.conftest import shipped_checkpoint

    ckpt = read_checkpoint(shipped_checkpoint("image-rvq7"))
    cfg = ImageTrainConfig.from_dict(ckpt["config"])
    assert cfg.quantizer == "rvq"
    model = ImageAutoencoder.from_config(cfg.net, cfg.quantizer_config)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()})


def test_cli_trains_a_family_by_name(data, tmp_path, capsys):
    """``strata train image --quantizer hrvq`` starts a run of that family; a resumed run keeps its own."""
    from strata.cli import main
    from strata.cli.train import QUANTIZERS
    from strata.train.quantize.families import FAMILIES

    assert QUANTIZERS == FAMILIES
    settings = {k: v for k, v in tiny_config(data, 2, "rvq").to_dict().items() if k not in ("data", "quantizer")}
    (tmp_path / "cfg.json").write_text(json.dumps(settings))
    run = tmp_path / "run"
    argv = ["train", "image", "--data", str(data), "--run", str(run), "--config", str(tmp_path / "cfg.json")]
    assert main([*argv, "--quantizer", "hrvq"]) == 0
    assert json.loads((run / "config.json").read_text())["quantizer"] == "hrvq"
    assert main([*argv, "--resume", "--steps", "3", "--quantizer", "rsq"]) == 1
    assert "cannot change a run being resumed" in capsys.readouterr().err
    assert main([*argv, "--resume", "--steps", "3"]) == 0
    assert torch.load(run / "last.pt", weights_only=False)["step"] == 3


# -- the two-scale family ------------------------------------------------------------------------


def two_scale(resample: str, stochastic: bool) -> TopBottomVQ:
    torch.manual_seed(0)
    q = TopBottomVQ(TopBottomConfig(top_layers=2, bottom_layers=3, codebook_size=16, dim=6, top_dim=10,
                                    resample=resample, stochastic=stochastic))
    q.init_kmeans(torch.randn(4, 6, 8, 8))
    return q.eval()


@pytest.mark.parametrize("resample", ["unshuffle", "pool"])
@pytest.mark.parametrize("stochastic", [False, True])
@pytest.mark.parametrize("size", [(8, 8), (7, 5)])
def test_two_scale_numpy_matches_torch(resample, stochastic, size):
    """The numpy search and sums (scale change included) give torch's codes and latents at every prefix."""
    from strata.train.quantize.families import decode_codes

    q = two_scale(resample, stochastic)
    z = torch.randn(3, 6, *size)
    with torch.no_grad():
        out = q(z, 5)
    nb = inference_codebooks(q)
    maps = nb.encode_maps(z.numpy(), 5)
    assert [m.shape for m in maps] == [(3, (size[0] + 1) // 2, (size[1] + 1) // 2)] * 2 + [(3, *size)] * 3
    for ours, theirs in zip(maps, out.codes, strict=True):
        np.testing.assert_array_equal(ours, theirs.numpy())
    grid = nb.encode(z.numpy(), 5)
    for k in range(1, 6):
        with torch.no_grad():
            expected = decode_codes(q, [torch.from_numpy(m) for m in maps[:k]], size).numpy()
        np.testing.assert_allclose(nb.decode_maps(maps[:k], size), expected, atol=1e-5)
        np.testing.assert_allclose(nb.decode(grid[:k]), expected, atol=1e-5)


def test_two_scale_prefixes_lower_the_error():
    q = two_scale("unshuffle", False)
    nb = inference_codebooks(q)
    z = torch.randn(4, 6, 8, 8).numpy()
    grid = nb.encode(z, 5)
    errors = [float(((nb.decode(grid[:k]) - z) ** 2).mean()) for k in range(1, 6)]
    assert all(b < a for a, b in zip(errors, errors[1:], strict=False)), errors


def test_two_scale_gradients_reach_the_scale_change_and_encoder():
    """Top-only prefixes train ``down``/``up``; the stochastic twin's ELBO term is finite and differentiable."""
    for stochastic in (False, True):
        q = two_scale("unshuffle", stochastic).train()
        z = torch.randn(2, 6, 8, 8, requires_grad=True)
        out = q(z, 2)  # top only
        mse = ((out.quantized - z) ** 2).mean()
        (mse + quantizer_loss(out, mse, 192.0)).backward()
        assert z.grad is not None and z.grad.abs().sum() > 0
        assert q.up.weight.grad is not None and q.up.weight.grad.abs().sum() > 0
        assert q.down.weight.grad is not None and q.down.weight.grad.abs().sum() > 0
        assert (out.latent_nats is not None) == stochastic


def test_two_scale_keep_layers_and_errors():
    q = two_scale("pool", False)
    with pytest.raises(ValueError, match="3..5"):
        q.keep_layers(2)  # every top layer and one bottom layer at least
    q.keep_layers(4)
    assert q.layers == 4 and q.cfg.bottom_layers == 2 and q.bottom.embed.shape[0] == 2
    with pytest.raises(ValueError, match="n_layers"):
        q(torch.randn(1, 6, 4, 4), 5)
    with pytest.raises(ValueError, match="resample"):
        TopBottomConfig(resample="bilinear")
    with pytest.raises(ValueError, match="maps"):
        q.init_kmeans(torch.randn(10, 6))
    nb = inference_codebooks(q)
    with pytest.raises(LayersError):
        nb.encode(np.zeros((1, 6, 4, 4), np.float32), 5)
    with pytest.raises(InputError, match="2×2 block"):
        codes = nb.encode(np.random.default_rng(0).standard_normal((1, 6, 4, 4)).astype(np.float32))
        codes[0, 0, 0, 1] = (codes[0, 0, 0, 0] + 1) % 16
        nb.decode(codes)
    bad = dict(nb.parts, up_weight=nb.parts["up_weight"][:, :3])
    with pytest.raises(ModelIntegrityError, match="up_weight"):
        type(nb)(bad, "pool")


@pytest.mark.parametrize("family", ["rvq", "hrvq", "rsq", "topbottom"])
def test_codebooks_file_round_trip(family, hrvq, rsq, tmp_path):
    from strata.quantize import load_quantizer, save_quantizer
    from strata.train.quantize.rvq import ResidualVQ

    module = {"hrvq": hrvq, "rsq": rsq, "topbottom": two_scale("unshuffle", False)}.get(family)
    if module is None:
        module = ResidualVQ(RVQConfig(layers=2, codebook_size=8, dim=6))
    nb = inference_codebooks(module)
    save_quantizer(tmp_path / "codebooks.npz", nb)
    again = load_quantizer(tmp_path / "codebooks.npz", family)
    z = np.random.default_rng(1).standard_normal((1, 6, 6, 4)).astype(np.float32)
    np.testing.assert_array_equal(again.encode(z), nb.encode(z))
    assert again.top_layers == (2 if family == "topbottom" else 0)
