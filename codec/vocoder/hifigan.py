"""HiFi-GAN vocoder for serving: ``vocoder.onnx`` through onnxruntime, in chunks (numpy only, no torch).

::

    log-mel [80, F] ─► windows of ≤ chunk + 2·rf frames ─┤ vocoder.onnx ├─► [1, 1, n·256] ─► centres ─► x [F · 256]

The generator is fully convolutional, so a mel of any length could go through in one call, but its
activations grow with the length (the last stage alone holds several ``[C, F·256]`` float32 tensors).
:func:`strata.chunking.apply_chunked` runs it on windows of ``chunk_frames`` frames plus
``receptive_field`` frames of context on each side and keeps the centres: memory is bounded by the
window, and the waveform equals the single call's (up to float32 summation order), because no output
sample depends on a frame further than the receptive field (:func:`strata.train.nets.hifigan_model.receptive_field`,
stored in the model's metadata by :func:`strata.train.nets.hifigan_model.export_generator`).

The generator's DC offset (0.13 of the RMS for the shipped V3 on 8 speech clips) is then removed by
:func:`strata.vocoder.dc.remove_dc` (``remove_dc=False`` keeps the network's raw output), and
``refine`` iterations of :func:`strata.vocoder.refine.refine` pull the waveform towards the log-mel it
was asked for (``refine=0``: the network's output; a per-call argument overrides the instance's)::

    log-mel ─► generator (chunked) ─► remove DC ─► refine × k (blocks) ─► clip to [−1, 1]

``HifiGanVocoder(log_mel)`` has the signature of :func:`strata.vocoder.griffinlim.griffin_lim`:
log-mel ``[n_mels, F]`` → float32 waveform ``[F · hop]``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from strata.chunking import iter_chunked
from strata.errors import InputError, ModelIntegrityError
from strata.frontend.audio import DEFAULT_MEL
from strata.runtime import OnnxNet
from strata.vocoder.refine import DEFAULT_ITERATIONS, MAX_ITERATIONS
from strata.vocoder.stream import DcStream, RefineStream

CHUNK_FRAMES = 512  # frames kept per network call (≈ 6 s at 22 050 Hz; windows add 2 × receptive field)


@dataclass(frozen=True)
class HifiGanVocoder:
    """Log-mel ``[n_mels, F]`` → waveform ``[F · hop]`` in [−1, 1] with an exported HiFi-GAN generator."""

    net: OnnxNet  # vocoder.onnx: "mel" [B, n_mels, F] float32 → "audio" [B, 1, F · hop]
    receptive_field: int  # one-sided, in mel frames: the context fed on each side of a chunk
    chunk_frames: int = CHUNK_FRAMES  # frames kept per network call
    n_mels: int = 80
    hop: int = 256  # output samples per mel frame
    remove_dc: bool = True  # subtract the output's running DC offset (codec.vocoder.dc)
    refine: int = DEFAULT_ITERATIONS  # mel-consistency iterations by default (codec.vocoder.refine; 0: none)

    def __post_init__(self) -> None:
        for name, value, low in (
            ("receptive_field", self.receptive_field, 0),
            ("chunk_frames", self.chunk_frames, 1),
            ("n_mels", self.n_mels, 1),
            ("hop", self.hop, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(f"{name} must be an integer ≥ {low}, got {value!r}")
        self._iterations(self.refine)

    @classmethod
    def load(
        cls,
        path: Path | str,
        providers: list[str] | None = None,
        threads: int = 0,
        receptive_field: int | None = None,
        chunk_frames: int = CHUNK_FRAMES,
        remove_dc: bool = True,
        refine: int = DEFAULT_ITERATIONS,
    ) -> HifiGanVocoder:
        """Open ``vocoder.onnx``; ``receptive_field`` (frames) defaults to the one in the model's metadata.

        ``providers`` and ``threads`` are :meth:`strata.runtime.OnnxNet.load`'s. Raises
        :class:`ModelIntegrityError` when the file cannot be loaded, or carries no (valid)
        ``receptive_field`` and none is given.
        """
        net = OnnxNet.load(Path(path), providers, threads)
        meta = net.session.get_modelmeta().custom_metadata_map
        try:
            n_mels = int(meta.get("n_mels", net.session.get_inputs()[0].shape[1]))
            hop = int(meta.get("hop", 256))
            if receptive_field is None:
                receptive_field = int(meta["receptive_field"])
        except KeyError:
            raise ModelIntegrityError(
                f"{path} records no receptive_field (exported before it was stored): pass receptive_field= "
                "(frames, codec.nets.hifigan.receptive_field of its config; 12 for V3, 14 for V1 and V2)"
            ) from None
        except (TypeError, ValueError) as e:
            raise ModelIntegrityError(f"{path} has unreadable vocoder metadata {dict(meta)}: {e}") from e
        return cls(net, receptive_field, chunk_frames, n_mels, hop, remove_dc, refine)

    @property
    def provider(self) -> str:
        """``"cuda"`` or ``"cpu"``: the provider that runs the network."""
        return self.net.provider

    def iterations(self, frames: int, refine: int | None = None) -> int:
        """The refinement iterations a call on ``frames`` mel frames applies (``refine``: as for ``__call__``).

        Raises :class:`InputError` for a ``refine`` the call would refuse.
        """
        iterations = self._iterations(self.refine if refine is None else refine)
        return iterations if frames * self.hop > DEFAULT_MEL.pad else 0

    def _iterations(self, value: object) -> int:
        """``value`` as a number of refinement iterations, or :class:`InputError`."""
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 0 <= value <= MAX_ITERATIONS:
            raise InputError(f"refine must be an integer in 0..{MAX_ITERATIONS}, got {value!r}")
        mel = (DEFAULT_MEL.n_mels, DEFAULT_MEL.hop)
        if value and (self.n_mels, self.hop) != mel:
            raise InputError(f"refinement needs the frontend's mel ({mel[0]} bands, hop {mel[1]}), "
                             f"not {self.n_mels} bands, hop {self.hop}: pass refine=0")
        return int(value)

    def __call__(self, log_mel: np.ndarray, refine: int | None = None) -> np.ndarray:
        """Log-mel ``[n_mels, F]`` (F ≥ 1, finite) → float32 waveform ``[F · hop]``, DC removed, clipped to [−1, 1].

        ``refine``: mel-consistency iterations for this call (default: the instance's ``refine``).
        A mel of one frame is not refined (its 256 samples are too few for the STFT's reflect padding of 384).
        The waveform is :meth:`stream`'s pieces put together (in one array allocated up front).
        """
        pieces = self.stream(log_mel, refine)
        out = np.empty(np.shape(log_mel)[1] * self.hop, dtype=np.float32)
        return fill(out, pieces)

    def stream(self, log_mel: np.ndarray, refine: int | None = None) -> Iterator[np.ndarray]:
        """The waveform of :meth:`__call__` in pieces, each given as soon as nothing later can change it.

        The generator runs on windows of ``chunk_frames`` frames and streams DC removal and refinement
        (:mod:`strata.vocoder.stream`), so memory is bounded by a window and the first piece comes after the
        first window (plus the refinement's margin), not after the whole sound. Arguments are checked here,
        before the first piece.
        """
        self._iterations(self.refine if refine is None else refine)
        m = np.asarray(log_mel)
        if m.dtype.kind not in "biuf":
            raise InputError(f"log-mel must be real numbers, got dtype {m.dtype}")
        if m.ndim != 2 or m.shape[0] != self.n_mels or m.shape[1] < 1:
            raise InputError(f"log-mel must be [{self.n_mels}, frames ≥ 1], got {m.shape}")
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf and is refused below
            m = m.astype(np.float32, copy=False)
        if not np.isfinite(m).all():
            raise InputError("log-mel contains NaN or infinite values (or values beyond float32)")
        total = m.shape[1] * self.hop
        dc = DcStream(total, self.hop) if self.remove_dc else None
        iterations = self.iterations(m.shape[1], refine)
        refiner = RefineStream(m, total, iterations) if iterations else None
        pieces = iter_chunked(lambda window: self.net(window[None])[0, 0], m, chunk=self.chunk_frames,
                              context=self.receptive_field, scale=self.hop)
        return self._pipeline(pieces, dc, refiner)

    @staticmethod
    def _pipeline(pieces: Iterator[tuple[int, np.ndarray]], dc: DcStream | None,
                  refiner: RefineStream | None) -> Iterator[np.ndarray]:
        def stages(x: np.ndarray, last: bool) -> np.ndarray:
            if dc is not None:
                x = np.concatenate([dc.push(x), dc.finish()]) if last else dc.push(x)
            if refiner is not None:
                x = np.concatenate([refiner.push(x), refiner.finish()]) if last else refiner.push(x)
            return np.clip(x, -1.0, 1.0, out=x) if x.size else x

        for _, piece in pieces:
            out = stages(piece.astype(np.float32), last=False)
            if out.size:
                yield out
        out = stages(np.empty(0, dtype=np.float32), last=True)
        if out.size:
            yield out


def fill(out: np.ndarray, pieces: Iterator[np.ndarray]) -> np.ndarray:
    """``out`` filled with the pieces in order (they must add up to its length exactly)."""
    pos = 0
    for piece in pieces:
        if pos + piece.size > out.size:
            raise RuntimeError(f"pieces overrun the {out.size} samples announced")
        out[pos : pos + piece.size] = piece
        pos += piece.size
    if pos != out.size:
        raise RuntimeError(f"pieces hold {pos} samples, {out.size} were announced")
    return out


__all__ = ["CHUNK_FRAMES", "HifiGanVocoder", "fill"]
