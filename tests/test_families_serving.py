"""Every quantizer family, exported and served: codec, CLI, HTTP and SDK round trips at every layer count,
truncation equal to ``--layers k``, the manifest's ``quantizer`` field, and the two-scale stream layout.

One tiny untrained model per family (a few-kilobyte network on synthetic images) goes through the real
export (ONNX, ``codebooks.npz`` of its family, priors fitted on its codes) into one models folder.
"""

import json

import numpy as np
import pytest
from strata.bitstream import parse, truncate
from strata.cli import main
from strata.errors import InputError, ModelIntegrityError
from strata.frontend.image import read_image
from strata.image import ImageCodec, ImageCodes
from strata.registry import Registry

from tests.conftest import png_bytes, running_server, server_settings, synthetic_image

torch = pytest.importorskip("torch")

FAMILY_CONFIGS = {
    "rvq": {"rvq": {"layers": 3, "codebook_size": 16, "dim": 8}},
    "rsq": {"rsq": {"layers": 3, "codebook_size": 16, "dim": 8}},
    "hrvq": {"hrvq": {"layers": 3, "codebook_size": 8, "dim": 8}},
    "topbottom": {"topbottom": {"top_layers": 2, "bottom_layers": 2, "codebook_size": 16, "dim": 8, "top_dim": 12}},
    "sq-topbottom": {"topbottom": {"top_layers": 2, "bottom_layers": 2, "codebook_size": 16, "dim": 8,
                                   "top_dim": 12, "resample": "pool"}},
}
FAMILIES = tuple(FAMILY_CONFIGS)


def name_of(family: str) -> str:
    return f"tiny-{family}"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    from strata.export.image import export_image_model
    from strata.train.image import ImageAutoencoder, ImageTrainConfig
    from strata.train.nets.image import block_pca

    root = tmp_path_factory.mktemp("families")
    data = root / "data"
    for split, seeds in (("train", range(4)), ("val", range(4, 6))):
        (data / split).mkdir(parents=True)
        for s in seeds:
            (data / split / f"im{s}.png").write_bytes(png_bytes(synthetic_image(64, 80, s)))
    models = root / "models"
    models.mkdir()
    net = {"latent_dim": 8, "channels": [8, 12, 16], "enc_blocks": [1, 1, 1], "dec_blocks": [1, 1, 1]}
    for family, qcfg in FAMILY_CONFIGS.items():
        base = ImageTrainConfig().to_dict()
        cfg = ImageTrainConfig.from_dict({**base, "data": str(data), "net": {**base["net"], **net}, "quantizer": family,
                                          **{k: {**base[k], **v} for k, v in qcfg.items()}})
        torch.manual_seed(0)
        model = ImageAutoencoder.from_config(cfg.net, cfg.quantizer_config).eval()
        with torch.no_grad():
            x = torch.from_numpy(np.stack([synthetic_image(64, 80, s) for s in range(4)])).permute(0, 3, 1, 2) / 255
            model.g_a.init_linear(*block_pca(x, 8))
            model.g_s.init_linear(*block_pca(x, 8))
            lat = model.g_a(x.float())
            if getattr(model.quantizer, "initialises_from_maps", False):
                model.quantizer.init_kmeans(lat)
            else:
                model.quantizer.init_kmeans(lat.permute(0, 2, 3, 1).reshape(-1, 8))
        ckpt = root / f"{family}.pt"
        torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "step": 0, "best": 0.0}, ckpt)
        export_image_model(ckpt, name_of(family), data, models, description=f"tiny {family}",
                           make_default=family == "rvq")
    return Registry(models)


@pytest.fixture(scope="module")
def codecs(registry):
    return {f: ImageCodec.load(registry, name_of(f)) for f in FAMILIES}


IMAGE = synthetic_image(45, 67, seed=3)  # odd sides: odd code grids, so the top grid is padded


def test_manifest_names_each_family(registry):
    for family in FAMILIES:
        entry = registry.entry(name_of(family))
        assert entry.quantizer == family
        assert entry.extra.get("top_layers", 0) == (2 if "topbottom" in family else 0)
    assert registry.default("image").name == "tiny-rvq"  # exported with make_default only for rvq
    doc = json.loads((registry.root / "manifest.json").read_text())
    assert {doc["models"][name_of(f)]["quantizer"] for f in FAMILIES} == set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_layer_count_round_trips_and_truncates(codecs, family):
    codec = codecs[family]
    stream = codec.compress(IMAGE)
    codes = codec.encode(IMAGE)
    assert codes.codes.shape == (codec.layers, *codec.grid(IMAGE.shape[:2]))
    for k in range(1, codec.layers + 1):
        decoded = codec.decompress(stream, k)
        np.testing.assert_array_equal(decoded, codec.decode(codes, k))
        np.testing.assert_array_equal(decoded, codec.decompress(truncate(stream, k)))
        np.testing.assert_array_equal(decoded, codec.decompress(codec.compress(IMAGE, k)))
        np.testing.assert_array_equal(codec.decompress_codes(stream, k).codes, codes.codes[:k])


@pytest.mark.parametrize("family", ["topbottom", "sq-topbottom"])
def test_two_scale_top_layers_are_coded_once_per_block(codecs, family):
    codec = codecs[family]
    codes = codec.encode(IMAGE).codes
    t = codec.quantizer.top_layers
    assert t == 2
    rows, cols = codes.shape[1:]
    top = codes[:t, ::2, ::2]
    assert top.shape[1:] == ((rows + 1) // 2, (cols + 1) // 2)
    np.testing.assert_array_equal(np.repeat(np.repeat(top, 2, 1), 2, 2)[:, :rows, :cols], codes[:t])
    # A top layer's chunk is about a quarter of a bottom layer's: it codes each block once.
    chunks = parse(codec.compress(IMAGE)).chunks
    assert len(chunks[0]) < 0.6 * len(chunks[t])
    # The prior's ideal bits, measured on the grid each layer is coded on, match the chunks.
    ideal = codec.prior.cross_entropy_bits(codes, t)
    for layer, chunk in enumerate(chunks):
        assert 8 * len(chunk) <= 1.05 * ideal[layer] + 64
    # Codes that differ inside a block have no top map: refused both ways, never silently dropped.
    bad = codes.copy()
    bad[0, 0, 1] = (bad[0, 0, 0] + 1) % codec.quantizer.codebook_size(0)
    for call in (codec.compress_codes, codec.decode):
        with pytest.raises(InputError, match="2×2 block"):
            call(ImageCodes(bad, IMAGE.shape[:2], codec.name))


def test_stream_of_one_family_is_refused_by_another(codecs):
    stream = codecs["topbottom"].compress(IMAGE)
    with pytest.raises(Exception, match="made by model 'tiny-topbottom'"):
        codecs["rvq"].decompress(stream)


def test_unknown_family_in_manifest_is_refused(registry, tmp_path):
    doc = json.loads((registry.root / "manifest.json").read_text())
    doc["models"]["tiny-rvq"]["quantizer"] = "pq"
    (tmp_path / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ModelIntegrityError, match="unknown quantizer family 'pq'"):
        Registry(tmp_path)


def test_codebooks_of_another_family_are_refused(registry, tmp_path):
    from strata.quantize import load_quantizer

    path = registry.path(registry.entry("tiny-rvq"), "codebooks")
    with pytest.raises(ModelIntegrityError, match="lack the array 'root'"):
        load_quantizer(path, "hrvq")
    with pytest.raises(ModelIntegrityError, match="unknown quantizer family"):
        load_quantizer(path, "nope")


@pytest.mark.parametrize("family", FAMILIES)
def test_cli_round_trip_by_model_name(registry, codecs, family, tmp_path):
    models = ["--models", str(registry.root)]
    (tmp_path / "in.png").write_bytes(png_bytes(IMAGE))
    name = name_of(family)
    assert main([*models, "compress", str(tmp_path / "in.png"), str(tmp_path / "a.strata"), "--model", name]) == 0
    k = codecs[family].layers - 1
    assert main([*models, "truncate", str(tmp_path / "a.strata"), str(tmp_path / "b.strata"), "--layers", str(k)]) == 0
    assert main([*models, "decompress", str(tmp_path / "b.strata"), str(tmp_path / "b.png")]) == 0
    expected = codecs[family].decompress((tmp_path / "a.strata").read_bytes(), k)
    np.testing.assert_array_equal(read_image((tmp_path / "b.png").read_bytes()), expected)


def test_http_and_sdk_serve_every_family(registry, codecs):
    pytest.importorskip("fastapi")
    from strata.client import Client
    from strata.server.main import create_app

    with running_server(create_app(server_settings(registry))) as url, Client(url, timeout=60) as client:
        listed = {m.name: m for m in client.models()}
        for family in FAMILIES:
            info = listed[name_of(family)]
            assert info.quantizer == family
            assert info.top_layers == (2 if "topbottom" in family else 0)
            codec = codecs[family]
            compressed = client.compress(IMAGE, model=codec.name)
            assert compressed.data == codec.compress(IMAGE)
            for k in range(1, codec.layers + 1):
                decoded = client.decompress(compressed.data, layers=k, format="npy").to_array()
                np.testing.assert_array_equal(decoded, codec.decompress(compressed.data, k))
            codes = client.encode(IMAGE, model=codec.name)
            np.testing.assert_array_equal(codes.array, codec.encode(IMAGE).codes)
            decoded = client.decode(codes, format="npy").to_array()
            np.testing.assert_array_equal(decoded, codec.decompress(compressed.data))
