"""Exceptions raised by the codec, in one hierarchy.

::

    StrataError                      every error the codec raises on purpose
    ├── InputError                   the caller's input is unusable (also a ValueError)
    │   ├── UnsupportedMediaError    not a decodable image / sound, or an unsupported mode
    │   ├── LimitExceededError       too many pixels, samples or bytes for the configured limits
    │   └── LayersError              a layer count outside 1..L (or above the layers present)
    ├── ModelError
    │   ├── UnknownModelError        no model of that name in the registry
    │   └── ModelIntegrityError      a model file is missing or its sha256 differs from the manifest
    ├── BitstreamError               a stream that cannot be decoded (also a ValueError)
    │   ├── BadMagicError            the first bytes are not ``STRA``
    │   ├── UnsupportedVersionError  a format version this build does not read
    │   ├── HeaderError              malformed header: bad field, header CRC mismatch
    │   ├── StreamLimitError         the header claims a size over the decoder's limits
    │   ├── StreamModelError         the stream names a model that is not loaded
    │   ├── WeightsMismatchError     the stream was made with other weights of that model
    │   ├── TruncatedStreamError     fewer bytes than the header announces
    │   ├── ChunkCorruptedError      a layer chunk fails its CRC32 (or does not decode)
    │   └── TrailingDataError        bytes after the last announced chunk
    └── BaselineError                an external baseline codec (opusenc/opusdec, ffmpeg) failed or timed out
        └── BaselineUnavailableError no such codec on this machine (neither opus-tools nor ffmpeg with libopus)

Every class has a stable ``code`` (snake_case) that the HTTP service returns in
its error body and that the client SDK maps back to the same class names.
"""

from __future__ import annotations


class StrataError(Exception):
    """Base class of every error the codec raises on purpose."""

    code = "strata_error"


class InputError(StrataError, ValueError):
    code = "invalid_input"


class UnsupportedMediaError(InputError):
    code = "unsupported_media"


class LimitExceededError(InputError):
    code = "limit_exceeded"


class LayersError(InputError):
    code = "invalid_layers"


class ModelError(StrataError):
    code = "model_error"


class UnknownModelError(ModelError, LookupError):
    code = "unknown_model"


class ModelIntegrityError(ModelError):
    code = "model_integrity"


class BitstreamError(StrataError, ValueError):
    code = "invalid_stream"


class BadMagicError(BitstreamError):
    code = "bad_magic"


class UnsupportedVersionError(BitstreamError):
    code = "unsupported_version"


class HeaderError(BitstreamError):
    code = "bad_header"


class StreamLimitError(BitstreamError):
    code = "stream_limit_exceeded"


class StreamModelError(BitstreamError):
    code = "stream_unknown_model"


class WeightsMismatchError(BitstreamError):
    code = "weights_mismatch"


class TruncatedStreamError(BitstreamError):
    code = "truncated_stream"


class ChunkCorruptedError(BitstreamError):
    code = "corrupted_chunk"


class TrailingDataError(BitstreamError):
    code = "trailing_data"


class BaselineError(StrataError):
    code = "baseline_failed"


class BaselineUnavailableError(BaselineError):
    code = "baseline_unavailable"


__all__ = [
    "BadMagicError",
    "BaselineError",
    "BaselineUnavailableError",
    "BitstreamError",
    "ChunkCorruptedError",
    "HeaderError",
    "InputError",
    "LayersError",
    "LimitExceededError",
    "ModelError",
    "ModelIntegrityError",
    "StrataError",
    "StreamLimitError",
    "StreamModelError",
    "TrailingDataError",
    "TruncatedStreamError",
    "UnknownModelError",
    "UnsupportedMediaError",
    "UnsupportedVersionError",
    "WeightsMismatchError",
]
