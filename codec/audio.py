"""The audio codec, wired from its parts.

::

    samples @ 22 050 Hz ─►─ pad ─►─┤ log-mel ├─►─ [80, F] ─►─┤ g_a ├─►─┤ RVQ ├─►─ codes [L, 10, F/4] ─►─ ANS ─►─ stream
    stream ─►─ codes[:k] ─►─ Σ code vectors ─►─┤ g_s ├─►─ log-mel ─►─┤ HiFi-GAN | Vocos | Griffin-Lim ├─►─ crop

The waveform is zero-padded at its end to a whole number of code columns (1 024 samples:
4 mel frames of 256), at least one; the header keeps the true sample count, and decoding
crops back to it. ``g_a``, ``g_s`` and the vocoder are fully convolutional and run on
overlapping windows (:func:`strata.chunking.apply_chunked`) whose context covers their
receptive field (measured at export, stored in the manifest), and so does the log-mel
frontend (context: its STFT padding), so a long input takes memory proportional to the
sound itself plus a bound set by the window, and decodes to the same result as one call
over the whole input.

``encode``/``decode`` deal in codes (the tokens API), ``compress``/``decompress`` in bytes;
``decode_mel``/``decompress_mel`` stop at the spectrogram. The number of layers and the
vocoder are per-call arguments; the codec holds no per-request state.

Every audio model has a HiFi-GAN vocoder (file role ``vocoder``); it may also have a Vocos one (role
``vocos``). The manifest's ``extra.vocoder`` names the one a decode uses when the caller names none
(``hifigan`` when absent); Griffin-Lim needs no file. Mel-consistency refinement
(:mod:`strata.vocoder.refine`) applies to either network; the manifest's ``extra.refine`` gives each
network's default number of iterations (8 when absent).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from strata.base import Geometry, StreamCodec
from strata.bitstream import Modality, StreamHeader, StreamLimits
from strata.chunking import PendingArray, apply_chunked, iter_chunked
from strata.entropy.context import ContextModel
from strata.entropy.prior import CodePrior
from strata.errors import HeaderError, InputError, LimitExceededError, ModelIntegrityError
from strata.frontend.audio import DEFAULT_MEL, log_mel
from strata.quantize import Quantizer
from strata.registry import ModelEntry, Registry
from strata.runtime import OnnxNet
from strata.vocoder.griffinlim import griffin_lim
from strata.vocoder.hifigan import HifiGanVocoder
from strata.vocoder.network import NetworkVocoder, fill
from strata.vocoder.refine import DEFAULT_ITERATIONS, MAX_ITERATIONS
from strata.vocoder.vocos import VocosVocoder

SAMPLE_RATE = DEFAULT_MEL.sample_rate
HOP = DEFAULT_MEL.hop
CHUNK_FRAMES = 2048  # mel frames per window of g_a / g_s (≈ 24 s)
MAX_COLUMNS = 2**16 - 1  # the v1 header stores the code-map width in 16 bits (≈ 50 minutes)


class Vocoder(enum.StrEnum):
    """How a decoded log-mel becomes a waveform."""

    HIFIGAN = "hifigan"  # the model's HiFi-GAN generator (ONNX), then mel-consistency refinement
    VOCOS = "vocos"  # the model's Vocos network (ONNX STFT frames, numpy inverse STFT), then refinement
    GRIFFINLIM = "griffinlim"  # 32 iterations of fast Griffin-Lim (no network)


NETWORK_ROLES = {Vocoder.HIFIGAN: "vocoder", Vocoder.VOCOS: "vocos"}  # manifest file role of each network


def default_iterations(entry: ModelEntry, vocoder: Vocoder) -> int:
    """The mel-consistency iterations a network vocoder of the model runs when a caller names none: the
    manifest's ``extra.refine[<vocoder>]`` (chosen on held-out clips), else the library's 8.

    Raises :class:`ModelIntegrityError` for a table that is not a mapping, names a network the model does not
    have (a typo would otherwise fall back to 8 unnoticed), or holds a count outside 0..32.
    """
    table = entry.extra.get("refine", {})
    if not isinstance(table, dict):
        raise ModelIntegrityError(f"model {entry.name!r}: extra.refine must map vocoders to iterations, got {table!r}")
    networks = [v.value for v in entry_vocoders(entry) if v in NETWORK_ROLES]
    for key, value in table.items():
        if key not in networks:
            raise ModelIntegrityError(f"model {entry.name!r}: extra.refine names {key!r}, not one of its network "
                                      f"vocoders ({', '.join(networks)})")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ITERATIONS:
            raise ModelIntegrityError(f"model {entry.name!r}: extra.refine.{key} must be an integer in "
                                      f"0..{MAX_ITERATIONS}, got {value!r}")
    return table.get(vocoder.value, DEFAULT_ITERATIONS)


def entry_vocoders(entry: ModelEntry) -> tuple[Vocoder, ...]:
    """The vocoders an audio model's manifest entry provides: its networks (by file role), then Griffin-Lim."""
    return (*(v for v, role in NETWORK_ROLES.items() if role in entry.files), Vocoder.GRIFFINLIM)


@dataclass(frozen=True)
class AudioCodes:
    """The code stack of one sound: ``codes`` int64 ``[k, rows, columns]``, one column per 1 024 samples."""

    codes: np.ndarray
    samples: int  # length of the sound at ``sample_rate``
    sample_rate: int
    model: str

    @property
    def layers(self) -> int:
        return int(self.codes.shape[0])

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate


def padded_length(samples: int, column: int) -> int:
    """Samples after zero-padding to a whole number (≥ 1) of ``column``-sample code columns."""
    return max(1, -(-samples // column)) * column


def analyse_mel(analysis: OnnxNet, quantizer: Quantizer, mel: np.ndarray, time_factor: int,
                layers: int | None = None, context: int = 0, chunk: int | None = None,
                search: Callable[[np.ndarray, int | None], np.ndarray] | None = None) -> np.ndarray:
    """Codes ``[k, rows, F/time_factor]`` of a log-mel ``[n_mels, F]`` (F a multiple of ``time_factor``).

    ``context`` (mel frames) > 0 runs ``g_a`` in windows of ``chunk`` frames (default
    :data:`CHUNK_FRAMES`, read at call time); 0 runs it once. ``search`` (latent ``[1, D, rows, columns]``,
    layers → codes ``[k, 1, rows, columns]``) picks the codes; default: ``quantizer``'s nearest-code search.
    """
    m = np.asarray(mel, dtype=np.float32)[None]
    if context > 0:
        latent = apply_chunked(analysis, m, chunk=CHUNK_FRAMES if chunk is None else chunk, context=context,
                               scale=Fraction(1, time_factor), align=time_factor)
    else:
        latent = analysis(m)
    return (quantizer.encode if search is None else search)(latent, layers)[:, 0]


class AudioCodec(StreamCodec):
    """A loaded audio model: ONNX mel transforms, RVQ codebooks, the entropy prior (:class:`StreamCodec`) and
    the vocoder."""

    modality = Modality.AUDIO
    stream_noun = "audio"

    def __init__(
        self,
        entry: ModelEntry,
        analysis: OnnxNet,
        synthesis: OnnxNet,
        quantizer: Quantizer,
        prior: CodePrior,
        vocoder: HifiGanVocoder,
        limits: StreamLimits | None = None,
        vocos: VocosVocoder | None = None,
        rdo_lambda: float | None = None,
        context: ContextModel | None = None,
    ) -> None:
        super().__init__(entry, analysis, synthesis, quantizer, prior, limits, context)
        self.rdo_lambda = self._rdo_lambda(rdo_lambda)
        try:
            self.rows = int(entry.extra["n_mels"]) // int(entry.extra["freq_factor"])
            rf = entry.extra["receptive_field"]
            self.context_a, self.context_s = int(rf["analysis"]), int(rf["synthesis"])
            if int(entry.extra["sample_rate"]) != SAMPLE_RATE or int(entry.extra["hop"]) != HOP:
                raise ValueError("sample rate / hop differ from the frontend's")
        except (KeyError, TypeError, ValueError) as e:
            raise ModelIntegrityError(f"model {entry.name!r}: malformed audio settings in the manifest: {e}") from None
        self.vocoder = vocoder  # HiFi-GAN: every audio model has one
        self.vocos = vocos
        try:
            self.default_vocoder = Vocoder(entry.extra.get("vocoder", Vocoder.HIFIGAN.value))
        except ValueError:
            raise ModelIntegrityError(f"model {entry.name!r}: unknown default vocoder "
                                      f"{entry.extra.get('vocoder')!r}") from None
        if self.default_vocoder is Vocoder.VOCOS and vocos is None:
            raise ModelIntegrityError(f"model {entry.name!r} names vocos its default vocoder but has no vocos file")

    @property
    def vocoders(self) -> tuple[Vocoder, ...]:
        """The vocoders this model can decode with (its networks, then Griffin-Lim)."""
        return (Vocoder.HIFIGAN, *((Vocoder.VOCOS,) if self.vocos is not None else ()), Vocoder.GRIFFINLIM)

    def network(self, vocoder: Vocoder | str | None = None) -> NetworkVocoder | None:
        """The network behind ``vocoder`` (default: the model's default), ``None`` for Griffin-Lim.

        Raises :class:`InputError` for an unknown name or a network this model lacks.
        """
        voc = self.resolve_vocoder(vocoder)
        if voc is Vocoder.GRIFFINLIM:
            return None
        return self.vocos if voc is Vocoder.VOCOS else self.vocoder

    def resolve_vocoder(self, vocoder: Vocoder | str | None) -> Vocoder:
        """``vocoder`` as a :class:`Vocoder` this model has (``None``: its default), or :class:`InputError`."""
        if vocoder is None:
            return self.default_vocoder
        try:
            voc = Vocoder(vocoder)
        except ValueError:
            raise InputError(f"vocoder must be one of {', '.join(v.value for v in Vocoder)}, got {vocoder!r}") from None
        if voc is Vocoder.VOCOS and self.vocos is None:
            raise InputError(f"model {self.name!r} has no vocos vocoder; it has {', '.join(self.vocoders)}")
        return voc

    @classmethod
    def load(
        cls,
        registry: Registry,
        name: str | None = None,
        providers: list[str] | None = None,
        threads: int = 0,
        limits: StreamLimits | None = None,
        refine: int | None = None,
        vocos_refine: int | None = None,
        rdo_lambda: float | None = None,
        precision: str = "float",
    ) -> AudioCodec:
        """Load (and sha256-verify) the model ``name`` (default: the registry's default audio model).

        ``refine`` / ``vocos_refine``: HiFi-GAN's and Vocos's default numbers of mel-consistency
        iterations (a decode call may override them); default the model's (:func:`default_iterations`).
        ``rdo_lambda``: the encoder's rate–distortion
        trade-off (:mod:`strata.quantize.rdo`); default the model's ``extra.rdo_lambda`` (chosen on
        held-out training clips), 0 for the nearest-code search. ``precision``: ``"float"``, or ``"int8"`` for
        the model's int8 mel synthesis network (:mod:`strata.export.int8`; :class:`InputError` if it has none):
        the same codes and streams, a slightly different log-mel, a faster decode.
        """
        role = cls._synthesis_role(registry, name, precision)
        entry, analysis, synthesis, quantizer, prior = cls._load_parts(registry, name, providers, threads, role)
        defaults = {v: default_iterations(entry, v) for v in NETWORK_ROLES}  # checks the table either way
        if refine is None:
            refine = defaults[Vocoder.HIFIGAN]
        vocoder = HifiGanVocoder.load(registry.path(entry, "vocoder"), providers, threads, refine=refine)
        vocos = None
        if NETWORK_ROLES[Vocoder.VOCOS] in entry.files:
            if vocos_refine is None:
                vocos_refine = defaults[Vocoder.VOCOS]
            vocos = VocosVocoder.load(registry.path(entry, NETWORK_ROLES[Vocoder.VOCOS]), providers, threads,
                                      refine=vocos_refine)
        return cls(entry, analysis, synthesis, quantizer, prior, vocoder, limits, vocos, rdo_lambda,
                   cls._load_context(registry, entry))

    @property
    def time_factor(self) -> int:
        """Mel frames per code column."""
        return self.entry.factor

    @property
    def column(self) -> int:
        """Samples per code column (1 024)."""
        return self.time_factor * HOP

    def grid(self, samples: int) -> tuple[int, int]:
        """Code-map size of a sound of ``samples`` samples."""
        return (self.rows, padded_length(samples, self.column) // self.column)

    def _geometry(self, size: tuple[int, int]) -> Geometry:
        samples = size[0]  # a header's size is (samples, sample rate)
        return self.grid(samples), (0, padded_length(samples, self.column) - samples)

    def _check_geometry(self, header: StreamHeader) -> None:
        samples, rate = header.size
        if rate != SAMPLE_RATE:
            raise HeaderError(f"stream announces {rate} Hz; model {self.name!r} works at {SAMPLE_RATE} Hz")
        try:
            self._check_length(samples)
        except LimitExceededError as e:
            raise HeaderError(str(e)) from None
        if (header.grid, header.padding) != self._geometry(header.size):
            raise HeaderError(f"grid {header.grid} / padding {header.padding} do not match {samples} samples")

    def _check_length(self, samples: int) -> None:
        if samples > self.limits.max_samples:
            raise LimitExceededError(
                f"sound of {samples / SAMPLE_RATE:.1f} s is over the limit of "
                f"{self.limits.max_samples / SAMPLE_RATE:.1f} s")
        if self.grid(samples)[1] > MAX_COLUMNS:
            raise LimitExceededError(
                f"sound of {samples / SAMPLE_RATE:.1f} s is longer than a v1 stream can hold "
                f"({MAX_COLUMNS * self.column / SAMPLE_RATE:.0f} s)")

    # -- codes ---------------------------------------------------------------------------------
    def encode(self, samples: np.ndarray, layers: int | None = None) -> AudioCodes:
        """Codes of mono float ``[T]`` samples at 22 050 Hz, first ``layers`` layers (default all).

        Resample other rates first (:func:`strata.frontend.audio.resample`).
        """
        k = self._layers(layers)
        x = np.asarray(samples)
        if x.ndim != 1 or x.dtype.kind != "f":
            raise InputError(f"samples must be mono float [T], got {x.dtype} {x.shape}")
        if x.size == 0:
            raise InputError("the sound has no samples")
        if not np.isfinite(x).all():
            raise InputError("the sound contains NaN or infinite samples")
        self._check_length(x.size)
        padded = np.zeros(padded_length(x.size, self.column), dtype=np.float32)
        np.clip(x, -1.0, 1.0, out=padded[: x.size])
        # The frontend works in float64 on a reflect-padded copy: in windows of CHUNK_FRAMES frames (whose
        # STFT frames, CHUNK_FRAMES · HOP samples plus the frontend's padding on each side, are those of the
        # whole signal) it holds a few MiB instead of four times the sound.
        mel = apply_chunked(log_mel, padded, chunk=CHUNK_FRAMES * HOP, context=DEFAULT_MEL.pad,
                            scale=Fraction(1, HOP), align=HOP)
        codes = analyse_mel(self.analysis, self.quantizer, mel, self.time_factor, k, self.context_a,
                            search=self._search)
        return AudioCodes(codes, int(x.size), SAMPLE_RATE, self.name)

    def _check_codes(self, codes: AudioCodes) -> np.ndarray:
        c = np.asarray(codes.codes)
        if codes.sample_rate != SAMPLE_RATE:
            raise InputError(f"codes at {codes.sample_rate} Hz; model {self.name!r} works at {SAMPLE_RATE} Hz")
        if not isinstance(codes.samples, (int, np.integer)) or codes.samples < 1:
            raise InputError(f"sample count must be a positive integer, got {codes.samples!r}")
        self._check_length(int(codes.samples))
        if c.ndim != 3 or c.shape[1:] != self.grid(int(codes.samples)):
            raise InputError(f"codes of shape {c.shape} do not fit {codes.samples} samples "
                             f"(grid {self.grid(int(codes.samples))})")
        if not np.issubdtype(c.dtype, np.integer):
            raise InputError(f"codes must be integers, got {c.dtype}")
        return c

    def decode_mel(self, codes: AudioCodes, layers: int | None = None) -> np.ndarray:
        """Log-mel ``[80, ceil(samples / 256)]`` from (the first ``layers`` layers of) ``codes``."""
        return np.asarray(self.pending_mel(codes, layers))

    def pending_mel(self, codes: AudioCodes, layers: int | None = None) -> PendingArray:
        """:meth:`decode_mel`'s log-mel, computed window by window as it is read (``g_s`` on windows of
        :data:`CHUNK_FRAMES` frames): a vocoder reading it forward starts after the first window. The codes
        and ``layers`` are checked here; reading the whole of it gives :meth:`decode_mel`'s array."""
        k = self._layers(layers, codes.layers)
        c = self._check_codes(codes)
        latent = self.quantizer.decode(c[:k, None].astype(np.int64))  # [1, D, rows, columns]
        tf = self.time_factor
        frames = -(-int(codes.samples) // HOP)
        windows = iter_chunked(self.synthesis, latent, chunk=CHUNK_FRAMES // tf, context=-(-self.context_s // tf),
                               scale=tf)

        def pieces() -> Iterator[np.ndarray]:
            sent = 0
            for _, piece in windows:
                piece = piece[0, :, : frames - sent]  # the last column's frames past the sound are dropped
                sent += piece.shape[-1]
                if piece.shape[-1]:
                    yield piece.astype(np.float32, copy=False)

        return PendingArray((int(self.entry.extra["n_mels"]), frames), np.float32, pieces(),
                            check=_finite_mel)

    def decode(self, codes: AudioCodes, layers: int | None = None,
               vocoder: Vocoder | str | None = None, refine: int | None = None) -> np.ndarray:
        """Float32 ``[samples]`` at 22 050 Hz from (the first ``layers`` layers of) ``codes``.

        ``vocoder``: ``hifigan``, ``vocos`` or ``griffinlim`` (default: the model's, :attr:`default_vocoder`).
        ``refine``: a network vocoder's mel-consistency iterations (:mod:`strata.vocoder.refine`; default:
        that vocoder's own, e.g. ``self.vocoder.refine``; 0: the network's output). Griffin-Lim takes none.
        """
        return fill(np.empty(int(codes.samples), dtype=np.float32), self.iter_decode(codes, layers, vocoder, refine))

    def iter_decode(self, codes: AudioCodes, layers: int | None = None,
                    vocoder: Vocoder | str | None = None, refine: int | None = None) -> Iterator[np.ndarray]:
        """:meth:`decode`'s samples in pieces, as the vocoder produces them (exactly ``codes.samples`` in all).

        With a network vocoder the first piece comes after its first window: ``g_s`` runs window by window
        as the vocoder reads the log-mel (:meth:`pending_mel`), and the vocoder's own windows, DC removal
        and refinement are streamed (:meth:`strata.vocoder.network.NetworkVocoder.stream`); refinement
        works on blocks of 512 frames, so with it the first piece waits for the first block. The network
        activations are bounded by a window; the decoded log-mel is kept as it arrives (80 floats per 256
        samples). Griffin-Lim is iterative over the whole sound: one piece. Arguments are checked before
        the first piece.
        """
        net = self.network(vocoder)
        if refine is not None and net is None:
            raise InputError(f"refine applies to the network vocoders ({Vocoder.HIFIGAN.value}, "
                             f"{Vocoder.VOCOS.value}), not {Vocoder.GRIFFINLIM.value}")
        if net is not None:
            net.iterations(1, refine)  # a bad refine is refused before g_s runs
        mel = self.pending_mel(codes, layers)  # g_s runs as the vocoder reads its windows
        pieces = net.stream(mel, refine) if net is not None else iter([griffin_lim(np.asarray(mel))])
        return _exactly(pieces, int(codes.samples))

    # -- bytes ---------------------------------------------------------------------------------
    def compress(self, samples: np.ndarray, layers: int | None = None) -> bytes:
        """The v1 stream of a sound (mono float ``[T]`` at 22 050 Hz) with its first ``layers`` layers."""
        return self.compress_codes(self.encode(samples, layers))

    def compress_codes(self, codes: AudioCodes) -> bytes:
        """Entropy-code a code stack into a stream."""
        self._layers(codes.layers)
        c = self._check_codes(codes).astype(np.int64)
        return self._pack(c, (int(codes.samples), SAMPLE_RATE))

    def decompress_codes(self, data: bytes, layers: int | None = None, partial: bool = False) -> AudioCodes:
        """Entropy-decode the first ``layers`` layers of a stream (default: all present)."""
        codes, header = self._unpack(data, layers, partial)
        return AudioCodes(codes, header.size[0], SAMPLE_RATE, self.name)

    def decompress_mel(self, data: bytes, layers: int | None = None, partial: bool = False) -> np.ndarray:
        """Log-mel ``[80, ceil(samples / 256)]`` decoded from the first ``layers`` layers of a stream."""
        return self.decode_mel(self.decompress_codes(data, layers, partial))

    def decompress(self, data: bytes, layers: int | None = None, partial: bool = False,
                   vocoder: Vocoder | str | None = None, refine: int | None = None) -> np.ndarray:
        """Float32 ``[samples]`` at 22 050 Hz from the first ``layers`` layers of a stream (see :meth:`decode`)."""
        return self.decode(self.decompress_codes(data, layers, partial), vocoder=vocoder, refine=refine)


def _finite_mel(piece: np.ndarray) -> None:
    """Refuse a decoded log-mel piece with NaN or infinite values (a network fault, never valid input)."""
    if not np.isfinite(piece).all():
        raise RuntimeError("the synthesis network produced NaN or infinite log-mel values")


def _exactly(pieces: Iterator[np.ndarray], n: int) -> Iterator[np.ndarray]:
    """The first ``n`` samples of ``pieces`` (float32), zeros appended if they hold fewer."""
    sent = 0
    for piece in pieces:
        piece = piece[: n - sent].astype(np.float32, copy=False)
        if piece.size:
            sent += piece.size
            yield piece
    if sent < n:  # ceil(n / 256) frames give up to 255 samples more, never fewer; kept for any vocoder
        yield np.zeros(n - sent, dtype=np.float32)


__all__ = ["HOP", "NETWORK_ROLES", "SAMPLE_RATE", "AudioCodec", "AudioCodes", "Vocoder", "analyse_mel",
           "default_iterations", "entry_vocoders", "padded_length"]
