"""Bulk tokenization: a folder (or a glob) of images or sounds → Parquet shards of their code stacks.

::

    tokenize(TokenizeJob("photos/", Path("tokens/"), layers=4, shard_size=256))         # one process
    tokenize(TokenizeJob(...), ray=True, workers=8)                                    # Ray actors

The inputs are listed once, sorted by their path relative to the folder (the glob's fixed prefix),
and cut into shards of ``shard_size`` files: shard ``i`` holds files ``[i·N, (i+1)·N)``. Each shard
is one Parquet file ``shard-00000.parquet`` with one row per file that encoded:

==============  ======================  ===============================================================
column          type                    meaning
==============  ======================  ===============================================================
id              string                  the file's path relative to the input folder (POSIX ``/``)
height, width   int32                   image size (images)
samples         int64                   sound length at ``sample_rate`` (sounds)
sample_rate     int32                   22 050 (sounds)
model           string                  model name
layers          int16                   code layers kept
codes           list<int16>             the code stack ``[k, h, w]``, flattened in C order
codes_shape     list<int32>             ``[k, h, w]``
stream          binary                  the Strata stream of those codes (``streams=True`` only)
==============  ======================  ===============================================================

A file that cannot be tokenized (not an image, over the size limits, unreadable) is left out of its
shard and recorded in the shard's metadata; ``errors.jsonl`` collects them all when the run ends.
Shards are written to a temporary name and renamed, so a shard that exists is complete: a rerun
skips it (``resume``). ``manifest.json`` describes the run; a rerun with other settings or other
inputs into the same folder is refused. The output is deterministic: the same inputs, model and
settings give the same bytes, in one process or on Ray (the workers run the same
:class:`ShardWorker`).

Needs ``pyarrow`` (the ``ray`` extra); Ray itself only for ``ray=True``.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from strata.errors import InputError, LimitExceededError, StrataError

MANIFEST = "manifest.json"
ERRORS = "errors.jsonl"
SHARD_FORMAT = "shard-{:05d}.parquet"
META_KEY = b"strata.tokenize"
MAX_FILE_BYTES = 1 << 30  # a larger file is refused before it is read
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
AUDIO_SUFFIXES = (".flac", ".wav", ".ogg")
MODALITIES = ("image", "audio")


@dataclass(frozen=True)
class TokenizeJob:
    """What to tokenize and where (the ``strata tokenize`` arguments)."""

    inputs: str  # a folder (searched recursively) or a glob (``**`` recursive)
    out: Path
    modality: str = "image"
    model: str | None = None  # None: the registry's default model of the modality
    layers: int | None = None  # None: all the model's layers
    shard_size: int = 256
    streams: bool = False  # also store each file's Strata stream
    models_dir: str | None = None  # None: $STRATA_MODELS or the shipped models


@dataclass(frozen=True)
class Shard:
    """One unit of work: shard ``index`` of ``files`` (ids relative to ``root``)."""

    index: int
    files: tuple[str, ...]

    @property
    def name(self) -> str:
        return SHARD_FORMAT.format(self.index)


@dataclass(frozen=True)
class Plan:
    """A resolved job: the inputs listed and cut into shards, the model and layers fixed."""

    job: TokenizeJob
    root: Path  # absolute
    out: Path  # absolute
    model: str
    layers: int
    config: dict  # what identifies the run (recorded in the manifest and in every shard)
    shards: tuple[Shard, ...]

    @property
    def inputs(self) -> int:
        return sum(len(s.files) for s in self.shards)


@dataclass
class ShardResult:
    index: int
    files: int
    rows: int
    errors: list[dict] = field(default_factory=list)
    skipped: bool = False  # already present (resumed run)
    seconds: float = 0.0


def _pyarrow():
    """pyarrow and pyarrow.parquet; a missing install raises ModuleNotFoundError (the CLI names the extra)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pa, pq


# -- inputs ------------------------------------------------------------------------------------------
def _has_magic(part: str) -> bool:
    return any(c in part for c in "*?[")


def list_inputs(spec: str, modality: str = "image") -> tuple[Path, list[str]]:
    """``(root, ids)``: the files of a folder (recursively, those with a suffix of the modality) or of a glob
    (every file it matches), as sorted POSIX paths relative to ``root`` (the folder, or the glob's fixed prefix)."""
    suffixes = IMAGE_SUFFIXES if modality == "image" else AUDIO_SUFFIXES
    path = Path(spec)
    if path.is_dir():
        root = path.resolve()
        files = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes]
        what = f"no {modality} files ({', '.join(suffixes)}) in {spec}"
    elif _has_magic(spec):
        parts = Path(spec).parts
        fixed = next(i for i, part in enumerate(parts) if _has_magic(part))
        root = Path(*parts[:fixed]).resolve() if fixed else Path.cwd()
        files = [Path(p).resolve() for p in glob.glob(spec, recursive=True)]
        files = [p for p in files if p.is_file()]
        what = f"no files match {spec}"
    elif path.exists():
        raise InputError(f"{spec} is a file; give a folder or a glob (quote it: 'photos/*.png')")
    else:
        raise InputError(f"{spec} does not exist (give a folder or a glob)")
    ids = sorted(p.relative_to(root).as_posix() for p in files)
    if not ids:
        raise InputError(what)
    return root, ids


def plan(job: TokenizeJob) -> Plan:
    """List the inputs, resolve the model (without loading its networks) and cut the shards."""
    from strata.registry import Registry

    if job.modality not in MODALITIES:
        raise InputError(f"modality must be one of {', '.join(MODALITIES)}, got {job.modality!r}")
    if job.shard_size < 1:
        raise InputError(f"shard size must be >= 1, got {job.shard_size}")
    registry = Registry(Path(job.models_dir) if job.models_dir else None)
    entry = registry.entry(job.model) if job.model else registry.default(job.modality)
    if entry.modality != job.modality:
        raise InputError(f"model {entry.name!r} is an {entry.modality} model, not an {job.modality} model")
    layers = entry.layers if job.layers is None else job.layers
    if not 1 <= layers <= entry.layers:
        raise InputError(f"layers must be in 1..{entry.layers} for model {entry.name!r}, got {layers}")
    if max(entry.codebook_sizes, default=0) > 1 << 15:
        raise InputError(f"model {entry.name!r} has codebooks of over 32768 entries: its codes do not fit int16")
    root, ids = list_inputs(job.inputs, job.modality)
    n = job.shard_size
    shards = tuple(Shard(i, tuple(ids[i * n:(i + 1) * n])) for i in range(-(-len(ids) // n)))
    config = {
        "modality": job.modality,
        "model": entry.name,
        "weights_sha256": entry.weights_sha256,
        "layers": layers,
        "shard_size": n,
        "streams": job.streams,
        "inputs": len(ids),
        "inputs_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
    }
    if job.modality == "image":
        # The encoder's search is part of the run: the same weights give other codes at another λ (the manifest's
        # ``extra.rdo_lambda``, which a model update may change without touching the weights). The workers
        # encode with this value, whatever the manifest says when they start.
        config["rdo_lambda"] = entry.extra.get("rdo_lambda", 0.0)
    return Plan(job, root, Path(job.out).resolve(), entry.name, layers, config, shards)


# -- one shard ---------------------------------------------------------------------------------------
def _config_digest(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def shard_is_complete(path: Path, shard: Shard, config: dict) -> dict | None:
    """The metadata of the shard file at ``path`` if it is a complete shard ``shard`` of this run, else None."""
    _, pq = _pyarrow()
    try:
        meta = pq.read_schema(path).metadata or {}
        info = json.loads(meta[META_KEY])
    except Exception:  # absent, truncated, not Parquet, foreign metadata: not a complete shard of this run
        return None
    ok = (info.get("index") == shard.index and info.get("files") == len(shard.files)
          and info.get("config") == _config_digest(config))
    return info if ok else None


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _schema(pa, modality: str, streams: bool):
    size = ([pa.field("height", pa.int32()), pa.field("width", pa.int32())] if modality == "image"
            else [pa.field("samples", pa.int64()), pa.field("sample_rate", pa.int32())])
    fields = [pa.field("id", pa.string()), *size, pa.field("model", pa.string()), pa.field("layers", pa.int16()),
              pa.field("codes", pa.list_(pa.int16())), pa.field("codes_shape", pa.list_(pa.int32()))]
    if streams:
        fields.append(pa.field("stream", pa.binary()))
    return pa.schema(fields)


class ShardWorker:
    """Loads the codec once and tokenizes shards (the same object in one process and in each Ray actor)."""

    def __init__(self, config: dict, models_dir: str | None, root: str, out: str, threads: int = 0) -> None:
        from strata.registry import Registry

        self.config, self.root, self.out = config, Path(root), Path(out)
        registry = Registry(Path(models_dir) if models_dir else None)
        if config["modality"] == "image":
            from strata.image import ImageCodec

            self.codec = ImageCodec.load(registry, config["model"], threads=threads,
                                         rdo_lambda=config["rdo_lambda"])
        else:
            from strata.audio import AudioCodec

            self.codec = AudioCodec.load(registry, config["model"], threads=threads)
        if self.codec.entry.weights_sha256 != config["weights_sha256"]:
            raise InputError(f"model {config['model']!r} changed while the run was planned")

    def _encode(self, data: bytes):
        if self.config["modality"] == "image":
            from strata.frontend.image import read_image

            return self.codec.encode(read_image(data, self.codec.limits.max_pixels), self.config["layers"])
        from strata.audio import SAMPLE_RATE
        from strata.frontend.audio import read_audio

        sound = read_audio(data, max_seconds=self.codec.limits.max_samples / SAMPLE_RATE, rate=SAMPLE_RATE)
        return self.codec.encode(sound.samples, self.config["layers"])

    def encode_file(self, file_id: str):
        """The codes of one input file; a bad file raises :class:`StrataError` or :class:`OSError`."""
        path = self.root / file_id
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise LimitExceededError(f"file of {size} bytes is over the limit of {MAX_FILE_BYTES}")
        data = path.read_bytes()
        return self._encode(data)

    def __call__(self, shard: Shard) -> ShardResult:
        return self.run(shard)

    def run(self, shard: Shard) -> ShardResult:
        """Tokenize ``shard`` into ``out/shard-NNNNN.parquet`` unless a complete one is there."""
        import numpy as np

        pa, pq = _pyarrow()
        start = time.perf_counter()
        path = self.out / shard.name
        present = shard_is_complete(path, shard, self.config)
        if present is not None:
            return ShardResult(shard.index, len(shard.files), present["rows"], present["errors"], skipped=True)
        image = self.config["modality"] == "image"
        rows: dict[str, list] = {"id": [], "a": [], "b": [], "codes": [], "shape": [], "stream": []}
        errors = []
        for file_id in shard.files:
            try:
                codes = self.encode_file(file_id)
                stream = self.codec.compress_codes(codes) if self.config["streams"] else None
            except (StrataError, OSError) as e:
                reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                errors.append({"file": file_id, "shard": shard.index,
                               "code": getattr(e, "code", "unreadable"), "message": " ".join(reason.split())})
                continue
            rows["id"].append(file_id)
            rows["a"].append(codes.size[0] if image else codes.samples)
            rows["b"].append(codes.size[1] if image else codes.sample_rate)
            rows["codes"].append(np.ascontiguousarray(codes.codes, dtype=np.int16).ravel())
            rows["shape"].append(list(codes.codes.shape))
            rows["stream"].append(stream)
        schema = _schema(pa, self.config["modality"], self.config["streams"])
        offsets = np.zeros(len(rows["codes"]) + 1, dtype=np.int64)
        np.cumsum([c.size for c in rows["codes"]], out=offsets[1:])
        values = np.concatenate(rows["codes"]) if rows["codes"] else np.zeros(0, dtype=np.int16)
        n = len(rows["id"])
        columns = [
            pa.array(rows["id"], pa.string()),
            pa.array(rows["a"], schema.field(1).type),
            pa.array(rows["b"], schema.field(2).type),
            pa.array([self.config["model"]] * n, pa.string()),
            pa.array([self.config["layers"]] * n, pa.int16()),
            pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values, pa.int16())).cast(pa.list_(pa.int16())),
            pa.array(rows["shape"], pa.list_(pa.int32())),
        ]
        if self.config["streams"]:
            columns.append(pa.array(rows["stream"], pa.binary()))
        info = {"index": shard.index, "files": len(shard.files), "rows": n, "errors": errors,
                "config": _config_digest(self.config)}
        table = pa.Table.from_arrays(columns, schema=schema.with_metadata({META_KEY: json.dumps(info).encode()}))

        def write(tmp: Path) -> None:
            pq.write_table(table, tmp, compression="zstd", row_group_size=max(1, n), write_statistics=False)

        _write_atomic(path, write)
        return ShardResult(shard.index, len(shard.files), n, errors, seconds=time.perf_counter() - start)


# -- the run -----------------------------------------------------------------------------------------
def _write_json(path: Path, doc: Any) -> None:
    _write_atomic(path, lambda tmp: tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n"))


def _manifest(p: Plan, results: dict[int, ShardResult] | None) -> dict:
    shards = []
    for s in p.shards:
        entry = {"file": s.name, "files": len(s.files), "first": s.files[0], "last": s.files[-1]}
        if results is not None:
            entry.update(rows=results[s.index].rows, errors=len(results[s.index].errors))
        shards.append(entry)
    doc = {"format": 1, "tool": "strata tokenize", **p.config, "shards": shards, "complete": results is not None}
    if results is not None:
        doc["rows"] = sum(r.rows for r in results.values())
        doc["errors"] = sum(len(r.errors) for r in results.values())
    return doc


def prepare(p: Plan) -> None:
    """Create the output folder, refuse one that holds another run, clear stale temporary files and record
    the planned run (``manifest.json`` with ``"complete": false``)."""
    p.out.mkdir(parents=True, exist_ok=True)
    path = p.out / MANIFEST
    if path.exists():
        try:
            old = json.loads(path.read_text())
            previous = {k: old.get(k) for k in p.config}
        except (OSError, ValueError, AttributeError):
            raise InputError(f"{path} is not a tokenize manifest; use another --out") from None
        if previous != p.config:
            diff = ", ".join(f"{k} {previous[k]!r} → {v!r}" for k, v in p.config.items() if previous[k] != v)
            raise InputError(f"{p.out} holds a tokenize run with other settings or inputs ({diff}); "
                             "use another --out, or delete it to start over")
    for stale in p.out.glob(".*.tmp-*"):
        stale.unlink(missing_ok=True)
    if not path.exists() or not json.loads(path.read_text()).get("complete"):
        _write_json(path, _manifest(p, None))


def finish(p: Plan, results: dict[int, ShardResult]) -> None:
    """``errors.jsonl`` (every shard's bad files, in shard and file order) and the complete manifest."""
    lines = [json.dumps(e, sort_keys=True) for i in sorted(results) for e in results[i].errors]
    _write_atomic(p.out / ERRORS, lambda tmp: tmp.write_text("".join(line + "\n" for line in lines)))
    _write_json(p.out / MANIFEST, _manifest(p, results))


def run_local(p: Plan, threads: int = 0) -> Iterator[ShardResult]:
    """Tokenize the shards one after the other in this process (results in shard order)."""
    todo = _todo(p)
    yield from _present(p, todo)
    if not todo:
        return
    worker = ShardWorker(p.config, p.job.models_dir, str(p.root), str(p.out), threads)
    for shard in todo:
        yield worker.run(shard)


def _todo(p: Plan) -> list[Shard]:
    return [s for s in p.shards if shard_is_complete(p.out / s.name, s, p.config) is None]


def _present(p: Plan, todo: list[Shard]) -> Iterator[ShardResult]:
    pending = {s.index for s in todo}
    for s in p.shards:
        if s.index not in pending:
            info = shard_is_complete(p.out / s.name, s, p.config) or {"rows": 0, "errors": []}
            yield ShardResult(s.index, len(s.files), info["rows"], info["errors"], skipped=True)


class _RayWorker:
    """A :class:`ShardWorker` in a Ray actor; its construction error (an unknown or changed model) is raised by
    :meth:`run`, since Ray reports an actor's ``__init__`` error as its own text only."""

    def __init__(self, *args: Any) -> None:
        self.error: Exception | None = None
        try:
            self.worker = ShardWorker(*args)
        except Exception as e:
            self.error = e

    def run(self, shard: Shard) -> ShardResult:
        if self.error is not None:
            raise self.error
        return self.worker.run(shard)


def run_ray(p: Plan, workers: int | None = None, threads: int = 1) -> Iterator[ShardResult]:
    """Tokenize the shards on Ray: ``workers`` actors (default: the cluster's CPUs), each loading the codec once
    (:class:`ShardWorker`, ``threads`` onnxruntime threads and as many CPUs), fed shards as they finish
    (:class:`ray.util.ActorPool`); results in completion order.

    Uses the running Ray if this process has one (``ray.init`` done), the cluster of ``$RAY_ADDRESS`` if set,
    else starts a local Ray with ``workers × threads`` CPUs. On a cluster, the inputs and the output folder must
    be on storage every node sees at the same path (NFS, a mounted bucket)."""
    import ray
    from ray.util import ActorPool

    todo = _todo(p)
    yield from _present(p, todo)
    if not todo:
        return
    started = False
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(log_to_driver=False)
        else:
            ray.init(num_cpus=(workers or os.cpu_count() or 1) * threads, include_dashboard=False,
                     log_to_driver=False)
        started = True
    try:
        n = workers or max(1, int(ray.cluster_resources().get("CPU", 1) // threads))
        n = min(n, len(todo))
        actor = ray.remote(num_cpus=threads)(_RayWorker)
        actors = [actor.remote(p.config, p.job.models_dir, str(p.root), str(p.out), threads) for _ in range(n)]
        pool = ActorPool(actors)
        try:
            yield from pool.map_unordered(lambda a, shard: a.run.remote(shard), todo)
        except ray.exceptions.RayTaskError as e:  # the worker's own error, not Ray's traceback text
            cause = getattr(e, "cause", None)
            raise (cause if isinstance(cause, Exception) else e) from None
        except ray.exceptions.ActorDiedError as e:
            raise InputError(f"a Ray worker died: {str(e).splitlines()[0]}") from None
        for a in actors:
            ray.kill(a)
    finally:
        if started:
            ray.shutdown()


@dataclass
class Summary:
    shards: int
    written: int
    skipped: int
    inputs: int
    rows: int
    errors: int
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def tokenize(job: TokenizeJob, ray: bool = False, workers: int | None = None, threads: int | None = None,
             on_shard: Callable[[ShardResult, Plan], None] | None = None) -> Summary:
    """Run ``job`` (one process, or Ray with ``ray=True``); ``on_shard`` is called after each shard (done or
    skipped), in the order they finish. ``threads``: onnxruntime threads per worker (default: all cores in one
    process, 1 per Ray worker)."""
    _pyarrow()  # before any work: a missing pyarrow is said at once
    p = plan(job)
    prepare(p)
    start = time.perf_counter()
    results: dict[int, ShardResult] = {}
    it = run_ray(p, workers, threads or 1) if ray else run_local(p, threads or 0)
    for r in it:
        results[r.index] = r
        if on_shard is not None:
            on_shard(r, p)
    finish(p, results)
    skipped = sum(r.skipped for r in results.values())
    return Summary(len(p.shards), len(results) - skipped, skipped, p.inputs, sum(r.rows for r in results.values()),
                   sum(len(r.errors) for r in results.values()), time.perf_counter() - start)


def read_shards(out: Path | str) -> Any:
    """All the shards of a run folder as one pyarrow Table (in shard order)."""
    pa, pq = _pyarrow()
    files = sorted(Path(out).glob("shard-*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]).replace_schema_metadata(None)


def progress_printer(stream=None) -> Callable[[ShardResult, Plan], None]:
    """An ``on_shard`` callback: a tqdm bar when ``stream`` is a terminal and tqdm is installed, else one line
    per shard; one ``strata: error:`` line per bad file either way (to stderr)."""
    stream = stream or sys.stderr
    done = [0]
    bar: list = []
    if stream.isatty():
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None:
            bar.append(tqdm)

    def show_bar(r: ShardResult, p: Plan) -> None:
        if len(bar) == 1:
            bar.append(bar[0](total=len(p.shards), unit="shard", file=stream))
        for e in r.errors if not r.skipped else ():
            bar[1].write(f"strata: error: {e['file']}: {e['message']} (skipped; see {ERRORS})", file=stream)
        bar[1].update(1)
        bar[1].set_postfix(files=r.files, errors=len(r.errors), refresh=False)
        if bar[1].n == len(p.shards):
            bar[1].close()

    def show(r: ShardResult, p: Plan) -> None:
        if bar:
            return show_bar(r, p)
        done[0] += 1
        for e in r.errors if not r.skipped else ():
            print(f"strata: error: {e['file']}: {e['message']} (skipped; see {ERRORS})", file=stream)
        head = f"[{done[0]}/{len(p.shards)}] {SHARD_FORMAT.format(r.index)}"
        if r.skipped:
            print(f"{head}: already complete, skipped", file=stream)
        else:
            rate = r.files / r.seconds if r.seconds > 0 else 0.0
            print(f"{head}: {r.rows}/{r.files} files, {len(r.errors)} errors, {r.seconds:.1f} s "
                  f"({rate:.1f} files/s)", file=stream)
        stream.flush()

    return show
