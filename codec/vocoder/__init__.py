"""Vocoders: log-mel ``[n_mels, frames]`` → waveform ``[frames · hop]``.

``griffinlim`` is the numpy baseline (no network); the HiFi-GAN generator
(``codec.nets.hifigan``, run through ONNX when serving) is the learned one.
"""

from codec.vocoder.griffinlim import griffin_lim

__all__ = ["griffin_lim"]
