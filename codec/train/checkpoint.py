"""Reading torch checkpoints (training state, exported float16 weights) with clear errors."""

from __future__ import annotations

from pathlib import Path

import torch
from strata.errors import InputError, ModelIntegrityError


def read_checkpoint(path: Path | str, required: tuple[str, ...], device: str | torch.device = "cpu") -> dict:
    """The checkpoint dict at ``path``, which must hold the keys ``required``.

    Raises InputError for a missing file and ModelIntegrityError for a file that is not a
    readable checkpoint or lacks one of the keys.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:  # torch raises pickle, zip and runtime errors for files that are not checkpoints
        raise ModelIntegrityError(f"{path} is not a readable torch checkpoint: {e}") from None
    missing = [k for k in required if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise ModelIntegrityError(f"{path} is not the expected checkpoint: it lacks {', '.join(missing)}")
    return ckpt
