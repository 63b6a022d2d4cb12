"""The model registry: ``models/manifest.json`` maps a model name to its files.

Every file is pinned by sha256 and verified when a model is loaded. A model's
*weights hash* is the sha256 of its serving files' hashes (``role:sha256`` lines
in role order, :data:`SERVING_ROLES`); its first 8 bytes go into every stream's
header, so a stream made with other weights of the same name is refused instead
of decoded wrongly. An audio model's ``vocoder`` file is verified too but is not
part of that hash: the codes do not depend on it.

Manifest shape::

    {"format": 1,
     "default": {"image": "<name>", "audio": "<name>"},
     "models": {"<name>": {"modality": "image", "quantizer": "rvq", "factor": 8, "layers": 8,
                           "codebook_sizes": [256, ...], "latent_dim": 32,
                           "files": {"analysis": {"path": "...", "sha256": "..."}, ...},
                           "weights_sha256": "...", "bits_per_layer": [...], "description": "..."}}}

``quantizer`` names the model's quantizer family (:data:`strata.quantize.FAMILIES`; ``rvq`` when
absent, as in manifests written before the other families existed): it says how ``codebooks.npz``
is read and which layers of a stream lie on a coarser grid.

The models folder is ``$STRATA_MODELS`` when set, else the shipped ``strata.models`` package
(:func:`default_models_dir`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from strata.bitstream import WEIGHTS_PREFIX
from strata.errors import ModelIntegrityError, UnknownModelError
from strata.quantize import FAMILIES

MANIFEST = "manifest.json"
# Files whose hashes make up a model's weights hash (what a stream's codes depend on).
SERVING_ROLES = {
    "image": ("analysis", "synthesis", "codebooks", "prior"),
    "audio": ("analysis", "synthesis", "codebooks", "prior"),
}
# Files a model may have that change what its streams mean, so they join the weights hash when present: a
# learned context model (strata.entropy.context) codes the same codes into different bytes.
OPTIONAL_SERVING_ROLES = ("context",)
# Files a model must have to be served. An audio model's vocoder turns the decoded mel into a waveform;
# the codes do not depend on it, so it is verified at load but kept out of the weights hash.
REQUIRED_ROLES = {"image": SERVING_ROLES["image"], "audio": (*SERVING_ROLES["audio"], "vocoder")}


def default_models_dir() -> Path:
    """``$STRATA_MODELS`` when set, else the models shipped in the ``strata.models`` package.

    The shipped models are package data: a wheel install finds them inside the installed
    package, a source checkout (editable install) in the repository's ``models/`` folder.
    """
    env = os.environ.get("STRATA_MODELS")
    if env:
        return Path(env)
    spec = importlib.util.find_spec("strata.models")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ModelIntegrityError("no shipped models: the strata.models package is missing; "
                                  "set STRATA_MODELS to a models folder")
    return Path(locations[0])


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def serving_roles(modality: str, files: dict[str, FileRef]) -> tuple[str, ...]:
    """The roles whose files make up the weights hash of a model of ``modality`` with ``files``: the
    modality's :data:`SERVING_ROLES`, then those of :data:`OPTIONAL_SERVING_ROLES` it has."""
    return (*SERVING_ROLES[modality], *(r for r in OPTIONAL_SERVING_ROLES if r in files))


def weights_hash(files: dict[str, FileRef], roles: tuple[str, ...]) -> str:
    """sha256 over ``role:sha256`` lines of the serving files, in ``roles`` order."""
    return hashlib.sha256("".join(f"{r}:{files[r].sha256}\n" for r in roles).encode()).hexdigest()


@dataclass(frozen=True)
class FileRef:
    path: str  # relative to the models folder
    sha256: str


@dataclass(frozen=True)
class ModelEntry:
    """One model of the manifest."""

    name: str
    modality: str
    factor: int
    layers: int
    codebook_sizes: tuple[int, ...]
    latent_dim: int
    files: dict[str, FileRef]
    weights_sha256: str
    bits_per_layer: tuple[float, ...] = ()  # measured mean bits per layer on the eval set (per image)
    bpp_per_layer: tuple[float, ...] = ()  # measured mean cumulative bpp per layer count on the eval set
    description: str = ""
    extra: dict = field(default_factory=dict)
    quantizer: str = "rvq"  # the quantizer family (strata.quantize.FAMILIES)

    @property
    def weights_prefix(self) -> bytes:
        return bytes.fromhex(self.weights_sha256)[:WEIGHTS_PREFIX]

    def to_dict(self) -> dict:
        return {
            "modality": self.modality,
            "quantizer": self.quantizer,
            "factor": self.factor,
            "layers": self.layers,
            "codebook_sizes": list(self.codebook_sizes),
            "latent_dim": self.latent_dim,
            "files": {k: {"path": v.path, "sha256": v.sha256} for k, v in self.files.items()},
            "weights_sha256": self.weights_sha256,
            "bits_per_layer": list(self.bits_per_layer),
            "bpp_per_layer": list(self.bpp_per_layer),
            "description": self.description,
            **({"extra": self.extra} if self.extra else {}),
        }

    @classmethod
    def from_dict(cls, name: str, d: dict) -> ModelEntry:
        try:
            files = {k: FileRef(str(v["path"]), str(v["sha256"])) for k, v in d["files"].items()}
            entry = cls(
                name=name,
                modality=str(d["modality"]),
                factor=int(d["factor"]),
                layers=int(d["layers"]),
                codebook_sizes=tuple(int(k) for k in d["codebook_sizes"]),
                latent_dim=int(d["latent_dim"]),
                files=files,
                weights_sha256=str(d["weights_sha256"]),
                bits_per_layer=tuple(float(b) for b in d.get("bits_per_layer", ())),
                bpp_per_layer=tuple(float(b) for b in d.get("bpp_per_layer", ())),
                description=str(d.get("description", "")),
                extra=dict(d.get("extra", {})),
                quantizer=str(d.get("quantizer", "rvq")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ModelIntegrityError(f"manifest entry {name!r} is malformed: {e!r}") from None
        roles = SERVING_ROLES.get(entry.modality)
        if roles is None:
            raise ModelIntegrityError(f"model {name!r}: unknown modality {entry.modality!r}")
        missing = [r for r in REQUIRED_ROLES[entry.modality] if r not in files]
        if missing:
            raise ModelIntegrityError(f"model {name!r} lacks files for {missing}")
        if entry.quantizer not in FAMILIES:
            raise ModelIntegrityError(f"model {name!r}: unknown quantizer family {entry.quantizer!r}; "
                                      f"known: {', '.join(FAMILIES)}")
        if len(entry.codebook_sizes) != entry.layers:
            raise ModelIntegrityError(f"model {name!r}: {entry.layers} layers but {len(entry.codebook_sizes)} sizes")
        if weights_hash(files, serving_roles(entry.modality, files)) != entry.weights_sha256:
            raise ModelIntegrityError(f"model {name!r}: weights_sha256 does not match its files' hashes")
        return entry


class Registry:
    """The models of one models folder (read-only)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_models_dir()
        path = self.root / MANIFEST
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise ModelIntegrityError(f"no model manifest at {path}") from None
        except OSError as e:  # the models folder is a file, manifest.json a folder, or unreadable
            raise ModelIntegrityError(f"cannot read model manifest {path}: {e.strerror or e}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelIntegrityError(f"model manifest {path} is not valid JSON: {e}") from None
        if (not isinstance(raw, dict) or raw.get("format") != 1 or not isinstance(raw.get("models"), dict)
                or not isinstance(raw.get("default", {}), dict)):
            raise ModelIntegrityError(f"model manifest {path} is not a format-1 manifest")
        self.entries = {name: ModelEntry.from_dict(name, d) for name, d in raw["models"].items()}
        self.defaults: dict[str, str] = dict(raw.get("default", {}))

    def names(self, modality: str | None = None) -> list[str]:
        return sorted(n for n, e in self.entries.items() if modality in (None, e.modality))

    def entry(self, name: str) -> ModelEntry:
        try:
            return self.entries[name]
        except KeyError:
            raise UnknownModelError(f"unknown model {name!r}; available: {', '.join(self.names()) or 'none'}") from None

    def default(self, modality: str) -> ModelEntry:
        name = self.defaults.get(modality)
        if name is None:
            raise UnknownModelError(f"no default {modality} model in {self.root / MANIFEST}")
        return self.entry(name)

    def path(self, entry: ModelEntry, role: str) -> Path:
        """The verified path of one of ``entry``'s files."""
        ref = entry.files.get(role)
        if ref is None:
            raise ModelIntegrityError(f"model {entry.name!r} has no {role!r} file")
        path = (self.root / ref.path).resolve()
        if self.root.resolve() not in path.parents:
            raise ModelIntegrityError(f"model {entry.name!r}: file {ref.path!r} is outside {self.root}")
        if not path.is_file():
            raise ModelIntegrityError(f"model {entry.name!r}: missing file {path}")
        actual = sha256_file(path)
        if actual != ref.sha256:
            raise ModelIntegrityError(
                f"model {entry.name!r}: {ref.path} has sha256 {actual[:16]}…, the manifest pins {ref.sha256[:16]}…"
            )
        return path


def write_manifest(root: Path, entries: dict[str, ModelEntry], defaults: dict[str, str]) -> Path:
    """Write ``manifest.json`` (sorted, indented, trailing newline)."""
    path = Path(root) / MANIFEST
    doc = {"format": 1, "default": defaults, "models": {n: e.to_dict() for n, e in sorted(entries.items())}}
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path
