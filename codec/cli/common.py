"""What every ``strata`` command shares: the one-line error, file checks, the model registry,
and the message that names the extra to install when a command's dependencies are missing."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from strata.errors import BitstreamError, LimitExceededError, TruncatedStreamError, UnsupportedMediaError

# A model name: a folder under the models folder and the name in its streams (1..64 ASCII bytes).
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

# Suffixes of the media files the CLI reads or writes (and of a few common others): not a stream's name.
MEDIA_SUFFIXES = frozenset((".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".npy",
                            ".wav", ".flac", ".ogg", ".opus", ".mp3", ".m4a", ".aif", ".aiff"))

# Top-level module -> the extra of strata-codec that installs it (for "pip install 'strata-codec[EXTRA]'").
EXTRA_OF_MODULE = {
    "numpy": "codec", "onnxruntime": "codec", "constriction": "codec", "PIL": "codec",
    "soundfile": "audio", "soxr": "audio", "librosa": "audio",
    "fastapi": "serve", "uvicorn": "serve", "pydantic": "serve", "pydantic_settings": "serve",
    "prometheus_client": "serve", "starlette": "serve", "swagger_ui_bundle": "serve",
    "scipy": "eval", "matplotlib": "eval",
    "torch": "train", "onnx": "train", "tqdm": "train",
    "pesq": "audio-eval", "pystoi": "audio-eval",
    "ray": "ray", "pyarrow": "ray",
}


class CliError(Exception):
    """A user-facing error: printed as ``strata: error: …`` with exit status 1."""


def missing_extra(e: ModuleNotFoundError, command: str) -> CliError | None:
    """A one-line error naming the extra that provides the module ``e`` could not import, or ``None``
    when it is not a module of one of this package's extras (a bug, not a missing install)."""
    root = (e.name or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(root)
    if extra is None:
        return None
    return CliError(f"strata {command} needs the '{extra}' extra (no module {root!r}): "
                    f"pip install 'strata-codec[{extra}]'")


def positive(flag: str, value: int | float | None, low: int | float = 1) -> None:
    """Refuse ``value`` below ``low`` (``None``: not given) before anything loads."""
    if value is not None and value < low:
        raise CliError(f"{flag} must be >= {low}, got {value}")


def read_input(path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        stdin = " (reading standard input is not supported)" if path == "-" else ""
        raise CliError(f"cannot read {path}: {e.strerror or e}{stdin}") from None
    if not data:
        raise CliError(f"{path} is empty")
    return data


def write_output(path: str, data: bytes) -> None:
    try:
        Path(path).write_bytes(data)
    except OSError as e:
        raise CliError(f"cannot write {path}: {e.strerror or e}") from None


def write_chunks(path: str, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` to ``path`` as they come (a long sound goes to disk while it is decoded), through a
    temporary file beside it that replaces ``path`` only when all went well: a failure leaves no half file."""
    out = Path(path)
    tmp = out.with_name(f".{out.name}.part")
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
        tmp.replace(out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CliError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_paths(args: argparse.Namespace, writes_stream: bool) -> None:
    """Refuse an output that would be written to stdout, over the input, or (a stream) under a media name."""
    if args.output == "-":
        raise CliError("writing to standard output ('-') is not supported; give an output file")
    out = Path(args.output)
    try:
        same = out.exists() and out.samefile(args.input)
    except OSError:
        same = False
    if same:
        raise CliError(f"output {args.output} is the input file; write to another path")
    if writes_stream and out.suffix.lower() in MEDIA_SUFFIXES:
        raise CliError(f"output {args.output} would hold a Strata stream, not {out.suffix} data; "
                       f"name it e.g. {out.with_suffix('.strata')}")


@contextmanager
def about(path: str, partial_hint: bool = False) -> Iterator[None]:
    """Errors about what the input file holds name it: ``strata: error: IN: …``."""
    try:
        yield
    except (BitstreamError, UnsupportedMediaError, LimitExceededError) as e:
        hint = partial_hint and isinstance(e, TruncatedStreamError)
        raise CliError(f"{path}: {e}" + ("; --partial decodes the complete layers" if hint else "")) from None


def looks_like_image(data: bytes) -> bool:
    """Whether ``data`` starts like a PNG, JPEG or WebP file (the images ``read_image`` opens)."""
    return (data[:8] == b"\x89PNG\r\n\x1a\n" or data[:3] == b"\xff\xd8\xff"
            or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"))


def check_url(args: argparse.Namespace) -> None:
    if args.url is not None and not args.url.strip():
        raise CliError("--url is empty; give a server URL such as http://127.0.0.1:8000, or leave it out")


def registry(args: argparse.Namespace):
    from strata.registry import Registry

    return Registry(Path(args.models) if args.models else None)


def image_codec(args: argparse.Namespace, name: str | None, encoder: str = "full", precision: str = "float"):
    """The image codec ``name`` with the ``encoder`` and ``precision`` asked for (an :class:`InputError` naming the
    missing network when the model has none)."""
    from strata.image import ImageCodec

    return ImageCodec.load(registry(args), name, encoder=encoder, precision=precision)


def audio_codec(args: argparse.Namespace, name: str | None, precision: str = "float"):
    from strata.audio import AudioCodec

    return AudioCodec.load(registry(args), name, precision=precision)


def is_audio(data: bytes) -> bool:
    """Whether ``data`` starts like a WAV, FLAC or Ogg file (what ``compress`` sends to the audio codec)."""
    return (data[:4] == b"RIFF" and data[8:12] == b"WAVE") or data[:4] in (b"fLaC", b"OggS")


def stream_header(data: bytes, remote: bool):
    """The stream's header; for ``--url``, ``None`` when it does not parse (the server then says why)."""
    from strata.bitstream import parse
    from strata.errors import BitstreamError

    try:
        return parse(data, partial=True).header
    except BitstreamError:
        if remote:
            return None
        raise


def npy_bytes(array) -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


@contextmanager
def remote(args: argparse.Namespace) -> Iterator:
    """A :class:`strata.client.Client` for ``--url``; the SDK's errors become :class:`CliError`."""
    from strata.client import Client, StrataAPIError, StrataClientError

    try:
        with Client(args.url, api_key=args.api_key or None) as c:
            yield c
    except StrataAPIError as e:
        r = e.response
        if e.code.startswith("http_") and r is not None and "html" in r.headers.get("content-type", ""):
            # a web page (another server, a proxy), not a Strata server's JSON error body
            raise CliError(f"{args.url}: HTTP {e.status} {r.reason_phrase}: "
                           "an HTML page, not a Strata server's answer") from None
        raise CliError(f"{args.url}: {e}") from None
    except StrataClientError as e:
        raise CliError(f"{args.url}: {e}") from None
    except ValueError as e:  # a malformed URL
        raise CliError(str(e)) from None


