"""Vocoders: log-mel ``[n_mels, frames]`` → waveform ``[frames · hop]``.

``griffinlim`` is the numpy baseline (no network); the HiFi-GAN generator
(``strata.train.nets.hifigan_model``, run through ONNX when serving) is the learned one.
"""

from strata.vocoder.griffinlim import griffin_lim

__all__ = ["griffin_lim"]
