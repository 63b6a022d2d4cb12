import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from strata.errors import InputError
from strata.frontend.audio import MelConfig
from strata.train.nets.hifigan_loss import (
    discriminator_loss,
    feature_matching_loss,
    frame_pattern,
    frame_pattern_loss,
    generator_adversarial_loss,
    mel_l1_loss,
    multi_resolution_stft_loss,
    phase_distances,
    phase_loss,
)
from strata.train.nets.hifigan_model import (
    BalancedPhases,
    Generator,
    HiFiGANConfig,
    MultiPeriodDiscriminator,
    MultiScaleDiscriminator,
    count_parameters,
    export_generator,
    phase_imbalance,
    receptive_field,
    remove_weight_norm,
)
from torch import nn
from torch.nn.utils import parametrize

TINY = HiFiGANConfig(upsample_initial_channel=16)  # V3 layout (8, 8, 4) at 1/16 of the width
TINY_V2 = HiFiGANConfig((8, 8, 2, 2), (16, 16, 4, 4), 16, "1", (3, 7), ((1, 3), (1, 3)))
TINY_BAL = HiFiGANConfig(upsample_initial_channel=16, balanced_upsampling=True)
TINY_MPD = {"periods": (2, 3, 5, 7, 11), "channels": (4, 8, 8)}
TINY_MSD = {"channels": (8, 8, 16, 16, 16, 16, 16), "groups": (1, 4, 4, 4, 4, 4, 1)}


def _mel(batch: int = 2, frames: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 80, frames, generator=torch.Generator().manual_seed(seed)) - 4


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    """Seeded, single-threaded torch: tiny tensors gain nothing from threads that fight a busy CPU."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- config ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "params"), [(HiFiGANConfig.v1, 13.92e6), (HiFiGANConfig.v2, 0.93e6), (HiFiGANConfig.v3, 1.46e6)]
)
def test_preset_sizes_match_the_paper(preset, params):
    cfg = preset()
    assert np.prod(cfg.upsample_rates) == cfg.hop == 256
    assert count_parameters(Generator(cfg)) == pytest.approx(params, rel=0.01)
    assert HiFiGANConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"upsample_rates": (8, 8, 2), "upsample_kernel_sizes": (16, 16, 4)}, "multiply to 128"),
        ({"upsample_rates": (8, 8, 4), "upsample_kernel_sizes": (16, 16)}, "one kernel size per"),
        ({"upsample_kernel_sizes": (16, 15, 8)}, "k − u even"),
        ({"upsample_initial_channel": 20}, "multiple of 2"),
        ({"resblock": "3"}, "resblock"),
        ({"resblock_kernel_sizes": (3, 4, 7)}, "odd"),
        ({"resblock_kernel_sizes": (3, 5)}, "one dilation tuple"),
        ({"upsample_kernel_sizes": (16, 12, 8), "balanced_upsampling": True}, "multiple of its rate"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(InputError, match=match):
        HiFiGANConfig(**kwargs)


# --- generator -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", [TINY, TINY_V2], ids=["v3-tiny", "v2-tiny"])
def test_generator_shape(cfg):
    y = Generator(cfg)(_mel(2, 5))
    assert y.shape == (2, 1, 5 * 256) and y.abs().max() < 1


def test_generator_rejects_wrong_mel():
    with pytest.raises(InputError, match="80"):
        Generator(TINY)(torch.zeros(1, 40, 5))


def test_remove_weight_norm_keeps_output():
    gen = Generator(TINY_V2).eval()
    mel = _mel(1, 4)
    with torch.no_grad():
        before = gen(mel)
        gen.remove_weight_norm()
        after = gen(mel)
    assert not any(parametrize.is_parametrized(m) for m in gen.modules())
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)


def test_balanced_phases_is_a_projection():
    w = torch.randn(3, 5, 16)
    bal = BalancedPhases(8)
    p = bal(w)
    sums = p.reshape(3, 5, 2, 8).sum(dim=2)  # taps c and c + 8 feed the same output phase
    torch.testing.assert_close(sums, sums.mean(dim=-1, keepdim=True).expand_as(sums))
    torch.testing.assert_close(bal(p), p)  # idempotent
    assert phase_imbalance(w, 8) > 0.1 and phase_imbalance(p, 8) < 1e-5
    torch.testing.assert_close(bal.right_inverse(p), p)


def test_balanced_upsampler_has_no_frame_rate_comb():
    """A constant input through a balanced transposed conv comes out constant; through a plain one it does not."""
    plain, bal = Generator(TINY), Generator(TINY_BAL)
    bal.load_state_dict(plain.state_dict())  # same parameters: a plain checkpoint initialises a balanced one
    x = torch.ones(1, 16, 12)
    with torch.no_grad():
        inner = slice(2 * 8, 10 * 8)  # away from the edges, where fewer taps overlap
        flat = bal.ups[0](x)[0, :, inner]
        wavy = plain.ups[0](x)[0, :, inner]
    assert (flat - flat[:, :1]).abs().max() < 1e-6
    assert (wavy - wavy[:, :1]).abs().max() > 1e-3
    # The whole generator on a steady mel: no waveform repeated every frame.
    mel = torch.full((1, 80, 64), -3.0)
    with torch.no_grad():
        y_plain, y_bal = plain(mel)[0, 0, 8 * 256:-8 * 256], bal(mel)[0, 0, 8 * 256:-8 * 256]
    ripple = [float((y - y.mean()).reshape(-1, 256).mean(0).abs().max() / y.abs().mean()) for y in (y_bal, y_plain)]
    assert ripple[0] < 1e-6 < 1e-2 < ripple[1], ripple  # a steady mel gives a steady output only when balanced


@pytest.mark.parametrize("cfg", [TINY, TINY_BAL], ids=["plain", "balanced"])
def test_onnx_export_parity(tmp_path, cfg):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    gen = Generator(cfg).eval()
    path = export_generator(gen, tmp_path / "generator.onnx")
    assert parametrize.is_parametrized(gen.conv_pre)  # the original keeps its weight norm
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, frames in [(1, 8), (3, 13)]:  # dynamic batch and frames
        mel = _mel(batch, frames, seed=frames)
        (out,) = sess.run(None, {"mel": mel.numpy()})
        with torch.no_grad():
            ref = gen(mel).numpy()
        assert out.shape == (batch, 1, frames * 256)
        np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta == {"n_mels": "80", "hop": "256", "receptive_field": str(receptive_field(cfg))}


# --- receptive field -------------------------------------------------------------------------------------------


def _measured_receptive_field(cfg: HiFiGANConfig, frames: int = 48) -> int:
    """Furthest output sample that one mel frame in the middle changes, in frames from that frame's position.

    Random positive weights and no biases, on a zero mel: the network's output is exactly 0, and a positive
    bump in frame ``t`` gives a positive output wherever any path reaches (leaky ReLU is the identity on
    positive values, so no path can cancel another or vanish below float64 resolution).
    """
    gen = Generator(cfg).double().eval()
    remove_weight_norm(gen)
    with torch.no_grad():
        for m in gen.modules():
            if isinstance(m, nn.Conv1d | nn.ConvTranspose1d):
                m.weight.uniform_(0.05, 1.0)
                m.bias.zero_()
        mel = torch.zeros(1, cfg.n_mels, frames, dtype=torch.float64)
        assert not gen(mel).any()
        t = frames // 2
        mel[0, :, t] = 1.0
        changed = torch.nonzero(gen(mel)[0, 0]).flatten()
    first, last = int(changed.min()), int(changed.max())
    assert first > 0 and last < frames * cfg.hop - 1, "the bump reached the ends: use more frames"
    return math.ceil(max(t - first / cfg.hop, last / cfg.hop - t))


@pytest.mark.parametrize(
    "cfg",
    [
        TINY,
        TINY_V2,
        replace(HiFiGANConfig.v1(), upsample_initial_channel=16),
        replace(HiFiGANConfig.v2(), upsample_initial_channel=16),
    ],
    ids=["v3", "v2-two-kernels", "v1", "v2"],
)
def test_receptive_field_bounds_the_measured_one(cfg):
    """The analytic bound (``receptive_field``) is ≥ the measured reach and at most 2 frames looser."""
    analytic, measured = receptive_field(cfg), _measured_receptive_field(cfg)
    print(f"\nreceptive field: analytic {analytic}, measured {measured} frames")
    assert measured <= analytic <= measured + 2


def test_receptive_field_of_the_presets():
    """Width does not matter, only the layout: V1 and V2 share theirs."""
    assert [receptive_field(c()) for c in (HiFiGANConfig.v1, HiFiGANConfig.v2, HiFiGANConfig.v3)] == [14, 14, 12]
    assert receptive_field(TINY) == receptive_field(HiFiGANConfig.v3())


# --- discriminators --------------------------------------------------------------------------------------------


def test_discriminator_sizes():
    sizes = {"mpd": count_parameters(MultiPeriodDiscriminator()), "msd": count_parameters(MultiScaleDiscriminator())}
    print(f"\n{sizes}")
    assert sizes["mpd"] == pytest.approx(41.1e6, rel=0.01) and sizes["msd"] == pytest.approx(29.6e6, rel=0.01)


def test_multi_period_discriminator():
    mpd = MultiPeriodDiscriminator(**TINY_MPD)
    out = mpd(torch.randn(2, 1, 1001))  # not a multiple of any period
    assert len(out.scores) == len(out.features) == 5
    assert all(s.dim() == 2 and s.shape[0] == 2 for s in out.scores)
    assert all(len(f) == 4 for f in out.features)  # 3 convs + post
    assert out.features[0][0].shape[-1] == 2 and out.features[-1][0].shape[-1] == 11


def test_multi_scale_discriminator():
    msd = MultiScaleDiscriminator(**TINY_MSD)
    out = msd(torch.randn(2, 1, 1024))
    assert len(out.scores) == len(out.features) == 3
    assert all(len(f) == 8 for f in out.features)
    assert out.features[1][0].shape[-1] < out.features[0][0].shape[-1]  # pooled scale
    assert parametrize.is_parametrized(msd.discriminators[0].convs[0])


def test_discriminator_validation():
    with pytest.raises(InputError, match="divisible"):
        MultiScaleDiscriminator(channels=(8, 8, 8, 8, 8, 8, 8), groups=(1, 16, 16, 16, 16, 16, 1))
    with pytest.raises(InputError, match=r"\[B, 1, T\]"):
        MultiPeriodDiscriminator(**TINY_MPD)(torch.zeros(2, 1000))


# --- losses ----------------------------------------------------------------------------------------------------


def test_adversarial_losses():
    real = [torch.ones(2, 5), torch.full((2, 3), 0.5)]
    fake = [torch.zeros(2, 5), torch.full((2, 3), 0.5)]
    assert discriminator_loss(real, fake).item() == pytest.approx(0 + 0.25 + 0.25)
    assert generator_adversarial_loss(fake).item() == pytest.approx(1 + 0.25)
    with pytest.raises(InputError):
        discriminator_loss(real, fake[:1])


def test_feature_matching_loss():
    real = [[torch.ones(2, 4), torch.zeros(2, 3)]]
    assert feature_matching_loss(real, real).item() == 0
    fake = [[torch.zeros(2, 4, requires_grad=True), torch.zeros(2, 3)]]
    loss = feature_matching_loss(real, fake)
    assert loss.item() == pytest.approx(2.0)
    loss.backward()
    assert fake[0][0].grad is not None


def test_reconstruction_losses_and_gradients():
    y = 0.3 * torch.sin(torch.arange(4096) / 7.0)[None, None].repeat(2, 1, 1)
    assert mel_l1_loss(y, y).item() == 0
    assert multi_resolution_stft_loss(y, y).item() == pytest.approx(0, abs=1e-6)
    y_hat = (y + 0.05 * torch.randn_like(y)).requires_grad_()
    mel = mel_l1_loss(y_hat, y, MelConfig(fmax=11025))
    stft = multi_resolution_stft_loss(y_hat, y)
    assert mel.item() > 0 and stft.item() > 0
    (mel + stft).backward()
    assert torch.isfinite(y_hat.grad).all() and y_hat.grad.abs().sum() > 0
    with pytest.raises(InputError):
        multi_resolution_stft_loss(y[..., :512], y[..., :512])


def test_frame_pattern_loss_sees_a_frame_rate_buzz():
    rng = torch.Generator().manual_seed(0)
    y = 0.1 * torch.randn(2, 1, 64 * 256, generator=rng)
    assert frame_pattern_loss(y, y, 256).item() == 0
    # Noise has almost no frame-locked part: its mean frame is ~1/8 (1/sqrt(64 frames)) of its RMS.
    assert frame_pattern(y[:, 0], 256).pow(2).mean().sqrt() < 0.2 * y.pow(2).mean().sqrt()
    buzz = 0.02 * torch.sin(2 * torch.pi * torch.arange(256) / 256 * 3).repeat(64)  # 3 × 86 Hz at 22 050 Hz
    shifted = y + 0.02 * torch.randn(y.shape, generator=rng)  # same level of error, not frame-locked
    assert frame_pattern_loss(y + buzz, y, 256) > 5 * frame_pattern_loss(shifted, y, 256)
    np.testing.assert_allclose(frame_pattern(buzz[None], 256)[0], buzz[:256], atol=1e-6)
    y_hat = (y + buzz).requires_grad_()
    frame_pattern_loss(y_hat, y, 256).backward()
    assert torch.isfinite(y_hat.grad).all() and y_hat.grad.abs().sum() > 0
    with pytest.raises(InputError, match="multiple of the hop"):
        frame_pattern_loss(y[..., :300], y[..., :300], 256)
    with pytest.raises(InputError, match="same shape"):
        frame_pattern_loss(y[:1], y, 256)


def test_phase_loss_sees_phase_not_level():
    t = torch.arange(8192) / 22050
    y = (torch.sin(2 * torch.pi * 220 * t) + 0.5 * torch.sin(2 * torch.pi * 440 * t + 1.0))[None]
    same = phase_loss(y, y)
    assert same.item() < 1e-3
    assert abs(phase_loss(0.3 * y, y).item() - same.item()) < 1e-4  # blind to level: the magnitude losses see it
    # A sign flip or a short delay keeps both phase differences (the absolute phase is not asked for).
    assert phase_loss(-y, y).item() < 1e-3
    late = torch.roll(y, 5, dims=-1)
    assert phase_loss(late, y).item() < 0.05  # (most of it from the wrapped-around edge)
    detuned = (torch.sin(2 * torch.pi * 230 * t) + 0.5 * torch.sin(2 * torch.pi * 460 * t + 1.0))[None]
    noise = torch.randn(y.shape, generator=torch.Generator().manual_seed(0))
    assert 0.1 < phase_loss(detuned, y) < phase_loss(noise, y)  # 10 Hz off: 30 degrees more per 256-sample hop
    d = phase_distances(late, y, 1024, 256, 1024)  # the absolute phase sees the delay, the differences do not
    assert d.instantaneous_phase > 0.1 > max(d.group_delay, d.instantaneous_frequency)
    d = phase_distances(detuned, y, 1024, 256, 1024)
    assert d.instantaneous_frequency > 2 * d.group_delay
    y_hat = (y + 0.1 * noise).requires_grad_()
    phase_loss(y_hat, y).backward()
    assert torch.isfinite(y_hat.grad).all() and y_hat.grad.abs().sum() > 0
    silent = torch.zeros_like(y).requires_grad_()  # no phase at all: finite, and the loss of a random phase
    loss = phase_loss(silent, y)
    loss.backward()
    assert loss.item() == pytest.approx(1.0) and torch.isfinite(silent.grad).all()
    with pytest.raises(InputError, match="same shape"):
        phase_loss(y[..., :4096], y)
    with pytest.raises(InputError, match="more than"):
        phase_loss(y[..., :400], y[..., :400])


def test_one_generator_step_runs():
    gen = Generator(TINY)
    mpd, msd = MultiPeriodDiscriminator(**TINY_MPD), MultiScaleDiscriminator(**TINY_MSD)
    mel = _mel(1, 8)
    y = torch.tanh(torch.randn(1, 1, 8 * 256))
    y_hat = gen(mel)
    loss = mel_l1_loss(y_hat, y)
    for d in (mpd, msd):
        real, fake = d(y), d(y_hat)
        loss = loss + generator_adversarial_loss(fake.scores) + feature_matching_loss(real.features, fake.features)
    loss.backward()
    assert all(p.grad is not None for p in gen.parameters())
