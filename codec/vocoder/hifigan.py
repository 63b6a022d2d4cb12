"""HiFi-GAN vocoder for serving: ``vocoder.onnx`` through onnxruntime, in chunks (numpy only, no torch).

::

    log-mel [80, F] ─► windows of ≤ chunk + 2·rf frames ─┤ vocoder.onnx ├─► [1, 1, n·256] ─► centres ─► x [F · 256]

The generator is fully convolutional, so a mel of any length could go through in one call, but its
activations grow with the length (the last stage alone holds several ``[C, F·256]`` float32 tensors).
:func:`strata.chunking.iter_chunked` runs it on windows of ``chunk_frames`` frames plus
``receptive_field`` frames of context on each side and keeps the centres: memory is bounded by the
window, and the waveform equals the single call's (up to float32 summation order), because no output
sample depends on a frame further than the receptive field (:func:`strata.train.nets.hifigan_model.receptive_field`,
stored in the model's metadata by :func:`strata.train.nets.hifigan_model.export_generator`).

The generator's DC offset (0.13 of the RMS for the shipped V3 on 8 speech clips) is then removed and
``refine`` iterations pull the waveform towards the log-mel it was asked for
(:class:`strata.vocoder.network.NetworkVocoder`, shared with the Vocos vocoder)::

    log-mel ─► generator (chunked) ─► remove DC ─► refine × k (blocks) ─► clip to [−1, 1]

``HifiGanVocoder(log_mel)`` has the signature of :func:`strata.vocoder.griffinlim.griffin_lim`:
log-mel ``[n_mels, F]`` → float32 waveform ``[F · hop]``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from strata.chunking import PendingArray, iter_chunked
from strata.runtime import OnnxNet
from strata.vocoder.network import CHUNK_FRAMES, NetworkVocoder, fill, read_metadata
from strata.vocoder.refine import DEFAULT_ITERATIONS


@dataclass(frozen=True)
class HifiGanVocoder(NetworkVocoder):
    """Log-mel ``[n_mels, F]`` → waveform ``[F · hop]`` in [−1, 1] with an exported HiFi-GAN generator.

    ``net``: vocoder.onnx, ``"mel"`` [B, n_mels, F] float32 → ``"audio"`` [B, 1, F · hop].
    """

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
        return cls.from_net(OnnxNet.load(Path(path), providers, threads), path, receptive_field, chunk_frames,
                            remove_dc, refine)

    @classmethod
    def from_net(cls, net: OnnxNet, path: Path | str, receptive_field: int | None = None,
                 chunk_frames: int = CHUNK_FRAMES, remove_dc: bool = True,
                 refine: int = DEFAULT_ITERATIONS) -> HifiGanVocoder:
        """:meth:`load` on a network already opened from ``path`` (named in errors)."""
        meta = read_metadata(net, path, receptive_field)
        return cls(net, meta["receptive_field"], chunk_frames, meta["n_mels"], meta["hop"], remove_dc, refine)

    def _waveform(self, m: np.ndarray | PendingArray) -> Iterator[np.ndarray]:
        pieces = iter_chunked(lambda window: self.net(window[None])[0, 0], m, chunk=self.chunk_frames,
                              context=self.receptive_field, scale=self.hop)
        return (piece for _, piece in pieces)


__all__ = ["CHUNK_FRAMES", "HifiGanVocoder", "fill"]
