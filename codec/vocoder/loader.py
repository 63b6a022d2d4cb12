"""Open an exported vocoder network as the right class, by what its ONNX metadata says it is."""

from __future__ import annotations

from pathlib import Path

from strata.runtime import OnnxNet
from strata.vocoder.hifigan import HifiGanVocoder
from strata.vocoder.network import NetworkVocoder
from strata.vocoder.refine import DEFAULT_ITERATIONS
from strata.vocoder.vocos import VocosVocoder


def load_vocoder(path: Path | str, providers: list[str] | None = None, threads: int = 0,
                 refine: int | None = None) -> NetworkVocoder:
    """A :class:`VocosVocoder` for a Vocos export (metadata ``arch=vocos``), else a :class:`HifiGanVocoder`.

    ``refine``: the default mel-consistency iterations (``None``: the library's, 8 for either network).
    """
    net = OnnxNet.load(Path(path), providers, threads)
    if net.session.get_modelmeta().custom_metadata_map.get("arch") == "vocos":
        return VocosVocoder.from_net(net, path, refine=DEFAULT_ITERATIONS if refine is None else refine)
    return HifiGanVocoder.from_net(net, path, refine=DEFAULT_ITERATIONS if refine is None else refine)


__all__ = ["load_vocoder"]
