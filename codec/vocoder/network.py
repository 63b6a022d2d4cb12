"""What every network vocoder shares: argument checks, chunked streaming, DC removal, refinement.

::

    log-mel [n_mels, F] ─► network, in windows (the subclass) ─► waveform pieces
        ─► remove DC (streamed) ─► refine × k (streamed, mel consistency) ─► clip to [−1, 1] ─► pieces out

A subclass says how a log-mel becomes raw waveform pieces (:meth:`NetworkVocoder._waveform`):
:class:`strata.vocoder.hifigan.HifiGanVocoder` runs a generator that outputs samples,
:class:`strata.vocoder.vocos.VocosVocoder` one that outputs STFT frames and inverts them. Everything after
that, and the one-shot call built from the stream (so both give the same samples), is here.
The networks run on windows of ``chunk_frames`` frames plus ``receptive_field`` frames of context on
each side (:func:`strata.chunking.iter_chunked`), so memory is bounded by a window.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from strata.chunking import PendingArray
from strata.errors import InputError, ModelIntegrityError
from strata.frontend.audio import DEFAULT_MEL
from strata.runtime import OnnxNet
from strata.vocoder.refine import DEFAULT_ITERATIONS, DEFAULT_MOMENTUM, MAX_ITERATIONS, check_momentum
from strata.vocoder.stream import DcStream, RefineStream

CHUNK_FRAMES = 512  # frames kept per network call (≈ 6 s at 22 050 Hz; windows add 2 × receptive field)


@dataclass(frozen=True)
class NetworkVocoder:
    """Log-mel ``[n_mels, F]`` → waveform ``[F · hop]`` in [−1, 1] through an exported network."""

    net: OnnxNet
    receptive_field: int  # one-sided, in mel frames: the context fed on each side of a chunk
    chunk_frames: int = CHUNK_FRAMES  # frames kept per network call
    n_mels: int = 80
    hop: int = 256  # output samples per mel frame
    remove_dc: bool = True  # subtract the output's running DC offset (strata.vocoder.dc)
    refine: int = DEFAULT_ITERATIONS  # mel-consistency iterations by default (strata.vocoder.refine; 0: none)
    momentum: float = DEFAULT_MOMENTUM  # the refinement's acceleration (strata.vocoder.refine.refine_block)

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
        check_momentum(self.momentum)

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

    def stream(self, log_mel: np.ndarray | PendingArray, refine: int | None = None) -> Iterator[np.ndarray]:
        """The waveform of :meth:`__call__` in pieces, each given as soon as nothing later can change it.

        The network runs on windows of ``chunk_frames`` frames and DC removal and refinement are streamed
        (:mod:`strata.vocoder.stream`), so memory is bounded by a window and the first piece comes after the
        first window (plus the refinement's margin), not after the whole sound. ``log_mel`` may be a
        :class:`strata.chunking.PendingArray` still being computed (a decoder's ``g_s`` output): each window
        is read when it is needed. Arguments are checked here, before the first piece.
        """
        self._iterations(self.refine if refine is None else refine)
        if isinstance(log_mel, PendingArray):  # a decoder's mel, arriving as it is computed: checked per piece
            m = log_mel
            if m.dtype != np.float32 or m.ndim != 2 or m.shape[0] != self.n_mels or m.shape[1] < 1:
                raise InputError(f"log-mel must be float32 [{self.n_mels}, frames ≥ 1], got {m.dtype} {m.shape}")
        else:
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
        refiner = RefineStream(m, total, iterations, momentum=self.momentum) if iterations else None
        return self._pipeline(self._waveform(m), dc, refiner)

    def _waveform(self, m: np.ndarray | PendingArray) -> Iterator[np.ndarray]:
        """The network's raw waveform for the checked float32 log-mel ``m``, in order, in pieces."""
        raise NotImplementedError

    @staticmethod
    def _pipeline(pieces: Iterator[np.ndarray], dc: DcStream | None,
                  refiner: RefineStream | None) -> Iterator[np.ndarray]:
        def stages(x: np.ndarray, last: bool) -> np.ndarray:
            if dc is not None:
                x = np.concatenate([dc.push(x), dc.finish()]) if last else dc.push(x)
            if refiner is not None:
                x = np.concatenate([refiner.push(x), refiner.finish()]) if last else refiner.push(x)
            return np.clip(x, -1.0, 1.0, out=x) if x.size else x

        for piece in pieces:
            out = stages(piece.astype(np.float32), last=False)
            if out.size:
                yield out
        out = stages(np.empty(0, dtype=np.float32), last=True)
        if out.size:
            yield out


def read_metadata(net: OnnxNet, path: Path | str, receptive_field: int | None, keys: tuple[str, ...] = ()) -> dict:
    """``n_mels``, ``hop``, ``receptive_field`` (and ``keys``) from an exported vocoder's ONNX metadata, as ints.

    ``receptive_field`` overrides the stored one (and is required when none is stored). Raises
    :class:`ModelIntegrityError` for missing or unreadable values.
    """
    meta = net.session.get_modelmeta().custom_metadata_map
    try:
        out = {"n_mels": int(meta.get("n_mels", net.session.get_inputs()[0].shape[1])),
               "hop": int(meta.get("hop", 256)),
               "receptive_field": int(meta["receptive_field"]) if receptive_field is None else receptive_field}
        out.update({k: int(meta[k]) for k in keys})
    except KeyError as e:
        raise ModelIntegrityError(
            f"{path} records no {e.args[0]} (exported before it was stored): pass receptive_field= "
            "(frames, codec.nets.hifigan.receptive_field of its config; 12 for V3, 14 for V1 and V2)"
        ) from None
    except (TypeError, ValueError) as e:
        raise ModelIntegrityError(f"{path} has unreadable vocoder metadata {dict(meta)}: {e}") from e
    return out


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


__all__ = ["CHUNK_FRAMES", "NetworkVocoder", "fill", "read_metadata"]
