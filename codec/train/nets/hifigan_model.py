"""HiFi-GAN vocoder networks (Kong, Kim & Bae, NeurIPS 2020, arXiv:2010.05646).

::

    mel [B,80,F] ─┤conv 7├─►─┬─► LReLU ─► ConvT ×u_i ─► MRF_i ─┬─► LReLU ─┤conv 7├─► tanh ─► x [B,1,F·256]
                             └──────────── stage i = 1..S ──────┘

    MRF (multi-receptive-field fusion) = mean over kernel sizes k_j of ResBlock(k_j, dilations D_j)

    x ─┬─► MPD: periods 2,3,5,7,11 — [B,1,T] folded to [B,1,T/p,p], 2-D convs (5×1, stride 3)
       └─► MSD: raw, ×2 and ×4 average-pooled audio — grouped 1-D convs (spectral norm on the raw scale)
    each returns a score map per sub-discriminator and its feature maps (for feature matching)

With ``balanced_upsampling`` every transposed convolution's weight goes through :class:`BalancedPhases`:
the taps that feed each output phase sum to the same value, so a constant input gives a constant
output and no tones at multiples of the input rate. A plain transposed convolution
is zero insertion followed by a filter; zero insertion copies the input's DC to every multiple of
the input rate, and only a filter with nulls there removes those images (Pons et al., "Upsampling
artifacts in neural audio synthesis", ICASSP 2021). After the rectifying LReLU the first stage's
input has a large DC, so an unconstrained first stage lays a comb at multiples of 22 050/256 ≈ 86 Hz
over everything the generator says. On the step-36 358 reconstruction-phase V3, 0.48 of the output's
RMS is one 256-sample waveform repeated every frame (``bench/vocoder_bands.py``; speech: 0.06).
Balancing its first stage's weights, with no retraining, brings the comb measure from 24 to 1.5, the
reference's (``bench/balance_upsamplers.py``).

All convolutions carry weight normalisation (torch parametrizations) for training;
:meth:`Generator.remove_weight_norm` folds it into plain weights, and
:func:`export_generator` exports a folded copy to ONNX with dynamic batch and frames.
:func:`receptive_field` bounds how many mel frames on either side an output sample depends on.
The losses are in :mod:`strata.train.nets.hifigan_loss`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import torch
import torch.nn.functional as F
from strata.errors import InputError
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

LRELU_SLOPE = 0.1  # inside the generator and the discriminators
OPSET = 17


@dataclass(frozen=True)
class HiFiGANConfig:
    """Generator hyper-parameters (saved beside the weights). Defaults are the paper's V3."""

    upsample_rates: tuple[int, ...] = (8, 8, 4)  # stride of each transposed conv; product = hop
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 8)  # kernel of each transposed conv (k − u even)
    upsample_initial_channel: int = 256  # channels after conv_pre; halved by every stage
    resblock: str = "2"  # "1": two convs per dilation (V1, V2); "2": one conv per dilation (V3)
    resblock_kernel_sizes: tuple[int, ...] = (3, 5, 7)  # one residual block per kernel size in each MRF (odd)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 2), (2, 6), (3, 12))  # dilations of each block
    n_mels: int = 80  # input mel bands
    hop: int = 256  # output samples per mel frame
    balanced_upsampling: bool = False  # BalancedPhases on every transposed conv (no frame-rate comb); not the paper

    def __post_init__(self) -> None:
        rates, kernels = self.upsample_rates, self.upsample_kernel_sizes
        if len(rates) != len(kernels) or not rates:
            raise InputError(f"need one kernel size per upsample rate, got rates {rates} and kernels {kernels}")
        prod = 1
        for u, k in zip(rates, kernels, strict=True):
            if u < 1 or k < u or (k - u) % 2:
                raise InputError(f"upsample kernel {k} must be ≥ its rate {u} with k − u even (output = u × input)")
            if self.balanced_upsampling and k % u:
                raise InputError(f"balanced upsampling needs each kernel to be a multiple of its rate, got {k} and {u}")
            prod *= u
        if prod != self.hop:
            raise InputError(f"upsample rates {rates} multiply to {prod}, but the mel hop is {self.hop}")
        if self.upsample_initial_channel % 2 ** len(rates) or self.upsample_initial_channel < 2 ** len(rates):
            raise InputError(
                f"upsample_initial_channel {self.upsample_initial_channel} must be a multiple of 2^{len(rates)}"
            )
        if self.resblock not in ("1", "2"):
            raise InputError(f"resblock must be '1' or '2', got {self.resblock!r}")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes) or not self.resblock_kernel_sizes:
            raise InputError("need one dilation tuple per residual-block kernel size")
        if any(k % 2 == 0 for k in self.resblock_kernel_sizes):
            raise InputError(f"residual-block kernel sizes must be odd, got {self.resblock_kernel_sizes}")
        if self.n_mels < 1:
            raise InputError(f"n_mels must be ≥ 1, got {self.n_mels}")

    @classmethod
    def v1(cls) -> HiFiGANConfig:
        """V1: 13.9 M parameters, the paper's best quality."""
        return cls((8, 8, 2, 2), (16, 16, 4, 4), 512, "1", (3, 7, 11), ((1, 3, 5), (1, 3, 5), (1, 3, 5)))

    @classmethod
    def v2(cls) -> HiFiGANConfig:
        """V2: V1's layout at a quarter of the width (0.9 M parameters)."""
        return cls((8, 8, 2, 2), (16, 16, 4, 4), 128, "1", (3, 7, 11), ((1, 3, 5), (1, 3, 5), (1, 3, 5)))

    @classmethod
    def v3(cls) -> HiFiGANConfig:
        """V3: three stages and single-conv residual blocks, the fastest."""
        return cls()

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> HiFiGANConfig:
        def tup(v: object) -> object:
            return tuple(tup(e) for e in v) if isinstance(v, list | tuple) else v

        return cls(**{k: tup(v) for k, v in d.items()})


def _same(kernel: int, dilation: int = 1) -> int:
    """Padding that keeps the length of a stride-1 convolution."""
    return dilation * (kernel - 1) // 2


def _init(conv: nn.Module) -> nn.Module:
    """N(0, 0.01) weights for the upsampling and residual convolutions (small residuals at start)."""
    nn.init.normal_(conv.weight, 0.0, 0.01)
    return conv


class BalancedPhases(nn.Module):
    """Parametrization of a ``ConvTranspose1d`` weight ``[in, out, k]`` (``k`` a multiple of the stride ``u``).

    Output sample ``q`` of a transposed convolution reads the taps ``t ≡ q + padding (mod u)``; this
    projection shifts the taps of each phase by a common amount so that every phase's taps sum to
    the mean over phases (per input/output channel pair). A projection: applying it twice changes
    nothing, and an already balanced weight is its own preimage (:meth:`right_inverse`).
    """

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        taps = w.shape[-1] // self.stride
        phases = w.reshape(*w.shape[:-1], taps, self.stride)  # tap j·u + c → [..., j, c]
        sums = phases.sum(dim=-2, keepdim=True)
        return (phases + (sums.mean(dim=-1, keepdim=True) - sums) / taps).reshape(w.shape)

    def right_inverse(self, w: torch.Tensor) -> torch.Tensor:
        return w


def phase_imbalance(w: torch.Tensor, stride: int) -> float:
    """Largest spread (max − min over phases) of a transposed-conv weight's per-phase tap sums."""
    sums = w.detach().reshape(*w.shape[:-1], w.shape[-1] // stride, stride).sum(dim=-2)
    return float((sums.amax(dim=-1) - sums.amin(dim=-1)).abs().max())


class ResBlock1(nn.Module):
    """Per dilation d: ``x + conv_k(LReLU(conv_{k,d}(LReLU(x))))`` — V1/V2 residual block. ``[B,C,T]`` → same."""

    def __init__(self, ch: int, kernel: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.dilated = nn.ModuleList(
            weight_norm(_init(nn.Conv1d(ch, ch, kernel, dilation=d, padding=_same(kernel, d)))) for d in dilations
        )
        self.plain = nn.ModuleList(
            weight_norm(_init(nn.Conv1d(ch, ch, kernel, padding=_same(kernel)))) for _ in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.dilated, self.plain, strict=True):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
        return x


class ResBlock2(nn.Module):
    """Per dilation d: ``x + conv_{k,d}(LReLU(x))`` — V3 residual block. ``[B,C,T]`` → same."""

    def __init__(self, ch: int, kernel: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.dilated = nn.ModuleList(
            weight_norm(_init(nn.Conv1d(ch, ch, kernel, dilation=d, padding=_same(kernel, d)))) for d in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c in self.dilated:
            x = x + c(F.leaky_relu(x, LRELU_SLOPE))
        return x


class MRF(nn.Module):
    """Multi-receptive-field fusion: the mean of residual blocks of different kernels and dilations."""

    def __init__(self, ch: int, cfg: HiFiGANConfig) -> None:
        super().__init__()
        block = ResBlock1 if cfg.resblock == "1" else ResBlock2
        self.blocks = nn.ModuleList(
            block(ch, k, d) for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes, strict=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(b(x) for b in self.blocks) / len(self.blocks)


class Generator(nn.Module):
    """Log-mel ``[B, n_mels, F]`` → waveform ``[B, 1, F · hop]`` in (−1, 1)."""

    def __init__(self, cfg: HiFiGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch = cfg.upsample_initial_channel
        self.conv_pre = weight_norm(nn.Conv1d(cfg.n_mels, ch, 7, padding=3))
        self.ups = nn.ModuleList()
        self.mrfs = nn.ModuleList()
        for u, k in zip(cfg.upsample_rates, cfg.upsample_kernel_sizes, strict=True):
            up = weight_norm(_init(nn.ConvTranspose1d(ch, ch // 2, k, stride=u, padding=(k - u) // 2)))
            if cfg.balanced_upsampling:  # after weight norm: the state dict keeps weight norm's g and v
                parametrize.register_parametrization(up, "weight", BalancedPhases(u))
            self.ups.append(up)
            ch //= 2
            self.mrfs.append(MRF(ch, cfg))
        self.conv_post = weight_norm(nn.Conv1d(ch, 1, 7, padding=3))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        if mel.dim() != 3 or mel.shape[1] != self.cfg.n_mels:
            raise InputError(f"mel must be [B, {self.cfg.n_mels}, frames], got {tuple(mel.shape)}")
        x = self.conv_pre(mel)
        for up, mrf in zip(self.ups, self.mrfs, strict=True):
            x = mrf(up(F.leaky_relu(x, LRELU_SLOPE)))
        x = F.leaky_relu(x, 0.01)  # the reference implementation's default slope here
        return torch.tanh(self.conv_post(x))

    def remove_weight_norm(self) -> None:
        """Fold every weight normalisation into a plain weight (in place; same outputs, faster, exportable)."""
        remove_weight_norm(self)


def receptive_field(cfg: HiFiGANConfig) -> int:
    """One-sided receptive field of :class:`Generator` in mel frames: ``ceil(max(left, right))``.

    Output sample ``n`` sits at frame position ``n / hop``; a layer whose output runs at ``r`` samples
    per frame widens the span of frames it depends on by (its extent in its own output samples) / ``r``:

    - ``conv_pre`` (kernel 7, at the frame rate): 3 frames each side;
    - ``ConvTranspose1d`` (kernel ``k``, stride ``u``, padding ``p = (k − u) / 2``, output rate ``r``):
      output ``q`` reads the inputs ``m`` with ``q − (k − 1 − p) ≤ m·u ≤ q + p``, so ``(k − 1 − p) / r``
      frames to the left and ``p / r`` to the right;
    - MRF: the widest of its residual blocks, each the sum of its convolutions' ``d·(k − 1)/2``
      (``ResBlock1`` adds a plain kernel-``k`` convolution per dilation), over ``r``;
    - ``conv_post`` (kernel 7, at the hop rate): 3 / hop frames.

    An input frame further than this from output sample ``n``'s position cannot change it, so it is the
    context that :func:`strata.chunking.apply_chunked` needs. The bound is tight: on the V1–V3 layouts
    the reach measured on a network (``tests/test_hifigan.py``) equals ``left`` and ``right`` to the
    sample (V3: 11.08 and 10.09 frames → 12; V1, V2: 13.72 and 12.73 → 14).
    """
    left = right = Fraction(3)  # conv_pre
    rate = 1
    for u, k in zip(cfg.upsample_rates, cfg.upsample_kernel_sizes, strict=True):
        rate *= u
        p = (k - u) // 2
        left += Fraction(k - 1 - p, rate)
        right += Fraction(p, rate)
        per_dilation = 1 if cfg.resblock == "1" else 0  # ResBlock1's extra plain conv per dilation
        mrf = max(
            sum(d * (kr - 1) // 2 + per_dilation * (kr - 1) // 2 for d in dils)
            for kr, dils in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes, strict=True)
        )
        left += Fraction(mrf, rate)
        right += Fraction(mrf, rate)
    left += Fraction(3, rate)  # conv_post
    right += Fraction(3, rate)
    return math.ceil(max(left, right))


def remove_weight_norm(module: nn.Module) -> None:
    """Replace every parametrized ``weight`` under ``module`` by its current value (in place)."""
    for m in module.modules():
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)


@dataclass
class DiscriminatorOutput:
    """Scores and feature maps of every sub-discriminator, in the same order."""

    scores: list[torch.Tensor] = field(default_factory=list)  # one [B, N_i] per sub-discriminator
    features: list[list[torch.Tensor]] = field(default_factory=list)  # per sub-discriminator, every layer's output


class PeriodDiscriminator(nn.Module):
    """Audio ``[B,1,T]`` folded to ``[B,1,⌈T/p⌉,p]`` (reflect-padded), then 5×1 convs with stride 3."""

    def __init__(self, period: int, channels: tuple[int, ...]) -> None:
        super().__init__()
        self.period = period
        convs, cin = [], 1
        for i, c in enumerate(channels):
            stride = 3 if i < len(channels) - 1 else 1
            convs.append(weight_norm(nn.Conv2d(cin, c, (5, 1), (stride, 1), padding=(2, 0))))
            cin = c
        self.convs = nn.ModuleList(convs)
        self.post = weight_norm(nn.Conv2d(cin, 1, (3, 1), padding=(1, 0)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, c, t = x.shape
        if t % self.period:
            x = F.pad(x, (0, self.period - t % self.period), mode="reflect")
        x = x.view(b, c, -1, self.period)
        return conv_stack(self.convs, self.post, x)


class ScaleDiscriminator(nn.Module):
    """Audio ``[B,1,T]`` → strided, grouped 1-D convs (MelGAN's discriminator block)."""

    KERNELS = (15, 41, 41, 41, 41, 41, 5)
    STRIDES = (1, 2, 2, 4, 4, 1, 1)

    def __init__(self, channels: tuple[int, ...], groups: tuple[int, ...], spectral: bool) -> None:
        super().__init__()
        norm = spectral_norm if spectral else weight_norm
        convs, cin = [], 1
        for c, g, k, s in zip(channels, groups, self.KERNELS, self.STRIDES, strict=True):
            convs.append(norm(nn.Conv1d(cin, c, k, s, groups=g, padding=_same(k))))
            cin = c
        self.convs = nn.ModuleList(convs)
        self.post = norm(nn.Conv1d(cin, 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return conv_stack(self.convs, self.post, x)


def conv_stack(convs: nn.ModuleList, post: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A sub-discriminator's body: LReLU after each of ``convs``, then ``post``; the flattened score and every
    layer's output (for feature matching)."""
    feats = []
    for conv in convs:
        x = F.leaky_relu(conv(x), LRELU_SLOPE)
        feats.append(x)
    x = post(x)
    feats.append(x)
    return x.flatten(1), feats


def check_audio(x: torch.Tensor) -> None:
    """Refuse anything but audio ``[B, 1, T]``."""
    if x.dim() != 3 or x.shape[1] != 1:
        raise InputError(f"audio must be [B, 1, T], got {tuple(x.shape)}")


class MultiPeriodDiscriminator(nn.Module):
    """MPD: one :class:`PeriodDiscriminator` per period (paper: 2, 3, 5, 7, 11; widths 32…1024)."""

    def __init__(
        self, periods: tuple[int, ...] = (2, 3, 5, 7, 11), channels: tuple[int, ...] = (32, 128, 512, 1024, 1024)
    ) -> None:
        super().__init__()
        if not periods or min(periods) < 1 or not channels:
            raise InputError(f"need periods ≥ 1 and at least one layer, got {periods}, {channels}")
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, channels) for p in periods)

    def forward(self, x: torch.Tensor) -> DiscriminatorOutput:
        """Audio ``[B, 1, T]`` (T > largest period) → scores and feature maps per period."""
        check_audio(x)
        out = DiscriminatorOutput()
        for d in self.discriminators:
            score, feats = d(x)
            out.scores.append(score)
            out.features.append(feats)
        return out


class MultiScaleDiscriminator(nn.Module):
    """MSD: :class:`ScaleDiscriminator` on the raw audio (spectral norm) and on ×2, ×4 average-pooled copies."""

    def __init__(
        self,
        scales: int = 3,
        channels: tuple[int, ...] = (128, 128, 256, 512, 1024, 1024, 1024),
        groups: tuple[int, ...] = (1, 4, 16, 16, 16, 16, 1),
    ) -> None:
        super().__init__()
        n = len(ScaleDiscriminator.KERNELS)
        if scales < 1 or len(channels) != n or len(groups) != n:
            raise InputError(f"need scales ≥ 1 and {n} channel and group counts, got {scales}, {channels}, {groups}")
        cins = (1, *channels[:-1])
        if any(ci % g or co % g for ci, co, g in zip(cins, channels, groups, strict=True)):
            raise InputError(f"channels {channels} must be divisible by their groups {groups}")
        self.discriminators = nn.ModuleList(
            ScaleDiscriminator(channels, groups, spectral=i == 0) for i in range(scales)
        )
        self.pool = nn.AvgPool1d(4, 2, padding=2)

    def forward(self, x: torch.Tensor) -> DiscriminatorOutput:
        """Audio ``[B, 1, T]`` → scores and feature maps per scale."""
        check_audio(x)
        out = DiscriminatorOutput()
        for i, d in enumerate(self.discriminators):
            if i:
                x = self.pool(x)
            score, feats = d(x)
            out.scores.append(score)
            out.features.append(feats)
        return out


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def export_generator(gen: Generator, path: Path | str, example_frames: int = 8) -> Path:
    """Export a weight-norm-folded copy of ``gen`` to ONNX: input ``mel`` [B, n_mels, F] → ``audio`` [B, 1, F·hop].

    Batch and frame axes are dynamic; ``gen`` itself is left unchanged. The model's metadata records
    ``n_mels``, ``hop`` and ``receptive_field`` (frames, :func:`receptive_field`) for the serving-side
    :class:`strata.vocoder.hifigan.HifiGanVocoder`, which needs the last to chunk long mels.
    """
    import onnx

    path = Path(path)
    # A fresh network, not copy.deepcopy: a deep copy shares the generated Parametrized* classes with the
    # original, and removing the parametrization from the copy deletes the ``weight`` property of both.
    g = Generator(gen.cfg).eval()
    g.load_state_dict(gen.state_dict())
    remove_weight_norm(g)
    example = torch.randn(1, g.cfg.n_mels, example_frames)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            g,
            (example,),
            str(path),
            input_names=["mel"],
            output_names=["audio"],
            dynamic_axes={"mel": {0: "batch", 2: "frames"}, "audio": {0: "batch", 2: "samples"}},
            opset_version=OPSET,
            dynamo=False,
        )
    model = onnx.load(str(path))
    meta = {"n_mels": g.cfg.n_mels, "hop": g.cfg.hop, "receptive_field": receptive_field(g.cfg)}
    onnx.helper.set_model_props(model, {k: str(v) for k, v in meta.items()})
    onnx.save(model, str(path))
    return path


__all__ = [
    "BalancedPhases",
    "DiscriminatorOutput",
    "Generator",
    "HiFiGANConfig",
    "MultiPeriodDiscriminator",
    "MultiScaleDiscriminator",
    "check_audio",
    "conv_stack",
    "count_parameters",
    "export_generator",
    "phase_imbalance",
    "receptive_field",
    "remove_weight_norm",
]
