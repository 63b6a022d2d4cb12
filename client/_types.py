"""Typed results of the SDK. numpy and Pillow are imported only by the methods that need them."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from typing import Any


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:  # pragma: no cover - depends on the install
        raise ImportError("this needs numpy: pip install numpy (or strata-codec[codec])") from None
    return numpy


class _StreamBytes:
    """``len()`` and ``save(path)`` of a result holding a stream in ``data``."""

    data: bytes

    def __len__(self) -> int:
        return len(self.data)

    def save(self, path: str | os.PathLike[str]) -> None:
        with open(path, "wb") as f:
            f.write(self.data)


@dataclass(frozen=True)
class Compressed(_StreamBytes):
    """A Strata stream made by ``compress``: ``data`` is the whole stream (header included)."""

    data: bytes
    model: str
    layers: int  # layers coded in the stream
    bpp: float  # bits per pixel of the whole stream
    width: int
    height: int


@dataclass(frozen=True, eq=False)
class Codes:
    """A code stack ``[layers, rows, columns]`` of one image (the "tokens").

    ``array`` is a numpy integer array when numpy is installed, else nested lists of ints.
    ``height``/``width`` are the original image's size (the grid is ``⌈size / factor⌉``).
    """

    array: Any
    model: str
    height: int
    width: int
    layers: int

    def to_json(self) -> dict[str, Any]:
        """The JSON document the server reads and writes."""
        array = self.array.tolist() if hasattr(self.array, "tolist") else self.array
        return {"model": self.model, "height": self.height, "width": self.width, "layers": self.layers,
                "codes": array}

    def to_npy(self) -> bytes:
        """``.npy`` bytes of the array (needs numpy)."""
        return _npy_bytes(self.array)


def _npy_bytes(array: Any) -> bytes:
    np = _numpy()
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


@dataclass(frozen=True)
class CompressedAudio(_StreamBytes):
    """A Strata audio stream made by ``compress_audio``: ``data`` is the whole stream (header included)."""

    data: bytes
    layers: int  # layers coded in the stream
    bytes: int  # stream length in bytes (= len(data))
    kbps: float  # bit rate of the whole stream, kbit/s
    seconds: float  # duration of the sound
    model: str
    samples: int = 0  # length of the sound at ``sample_rate``
    sample_rate: int = 22050


@dataclass(frozen=True, eq=False)
class AudioCodes:
    """A code stack ``[layers, rows, columns]`` of one sound (one column per 1 024 samples at 22 050 Hz).

    ``array`` is a numpy integer array when numpy is installed, else nested lists of ints.
    """

    array: Any
    model: str
    samples: int
    sample_rate: int
    layers: int

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate

    def to_json(self) -> dict[str, Any]:
        """The JSON document the server reads and writes."""
        array = self.array.tolist() if hasattr(self.array, "tolist") else self.array
        return {"model": self.model, "samples": self.samples, "sample_rate": self.sample_rate,
                "layers": self.layers, "codes": array}

    def to_npy(self) -> bytes:
        """``.npy`` bytes of the array (needs numpy)."""
        return _npy_bytes(self.array)


@dataclass(frozen=True)
class DecodedImage:
    """An image decoded by the server: ``data`` holds PNG, WebP or ``.npy`` bytes (see ``format``)."""

    data: bytes
    format: str  # "png" | "webp" | "npy"
    layers: int  # layers used to decode it
    model: str
    width: int
    height: int
    stream_layers: int | None = None  # complete layers present in the stream (decompress only)

    def to_array(self) -> Any:
        """RGB ``uint8 [H, W, 3]`` numpy array (needs numpy, and Pillow for PNG/WebP)."""
        np = _numpy()
        if self.format == "npy":
            return np.load(io.BytesIO(self.data), allow_pickle=False)
        try:
            from PIL import Image
        except ImportError:  # pragma: no cover - depends on the install
            raise ImportError("decoding PNG/WebP needs Pillow: pip install pillow") from None
        with Image.open(io.BytesIO(self.data)) as im:
            return np.asarray(im.convert("RGB"))

    def save(self, path: str | os.PathLike[str]) -> None:
        with open(path, "wb") as f:
            f.write(self.data)


@dataclass(frozen=True)
class ModelInfo:
    """A model served by the server (``GET /v1/models``)."""

    name: str
    modality: str
    layers: int
    codebook_sizes: tuple[int, ...]
    factor: int
    bits_per_layer: tuple[float, ...]
    bpp_per_layer: tuple[float, ...]
    description: str
    weights_sha256: str  # first 16 hex digits
    default: bool  # the default model of its modality
    kbps_per_layer: tuple[float, ...] = ()  # audio: measured kbit/s with 1..L layers (empty when not measured)
    sample_rate: int | None = None  # audio: 22050; None for images
    quantizer: str = "rvq"  # family: rvq, rsq, hrvq, topbottom or sq-topbottom
    top_layers: int = 0  # first layers with one code per 2×2 block of the grid (repeated over it in codes arrays)
    vocoders: tuple[str, ...] = ()  # audio: the vocoder= values the model takes (empty for images)
    default_vocoder: str | None = None  # audio: the vocoder used when none is named
    default_refine: dict[str, int] = field(default_factory=dict, hash=False)  # audio: network vocoder → its iterations


@dataclass(frozen=True)
class Health:
    """``GET /readyz``: ``status`` is ``"ready"`` once the models are loaded."""

    status: str
    provider: str | None
    models: tuple[str, ...]


__all__ = ["AudioCodes", "Codes", "Compressed", "CompressedAudio", "DecodedImage", "Health", "ModelInfo"]
