"""Server latency (p50/p95/p99) and throughput under a bounded concurrent load on loopback (docs/design.md §7).

By default starts the service itself (``python -m strata.server`` on 127.0.0.1, a free port, the shipped
models), waits for ``/readyz``, runs the load and stops the server again (also on Ctrl-C or an
error). ``--url`` targets a server that is already running instead; only loopback addresses
(127.0.0.0/8, ``localhost``, ``::1``) are accepted.

The load is a closed loop: for each cell (operation × image × concurrency), N asyncio workers share
one httpx connection pool and send requests back to back: a warm-up of ``--warmup`` seconds (and
at least until every worker has had an answer, so a slow cell starts measuring in the steady
state), then ``--duration`` measured seconds. The requests that finish inside the measured window
count: requests/s = those that succeeded / duration, so the load is steady across the window.
Requests still in flight when it closes are awaited, not counted (each is bounded by
``--timeout``), so the server is idle again when the next cell starts and a cell ends by itself
after at most max(warm-up, timeout) + duration + timeout; ``--max-requests`` caps a cell's count as well.
``decompress`` sends the stream made by one ``compress`` call of the same image (checked to
decode to the right size first). Latency percentiles are over the successful (2xx) requests;
``errors`` counts non-2xx answers and transport exceptions, e.g. ``503 overloaded`` when more
requests arrive than ``workers + max_queue`` admit; after an error a worker waits as the
server's ``Retry-After`` says (1 s for 503 overloaded), or 10 ms, as a polite client would.
For a self-started server on Linux, ``server CPU ms/req`` is the CPU time (user + system) that the
server's processes used in the window (every process of its session: uvicorn, or Ray's proxy,
controller, replicas and daemons) per successful request, and ``client CPU`` the share of one core
this benchmark used meanwhile: on a small machine the load generator and the server share the cores.

    python bench/load.py                                     # 1, 8, 32 × compress, decompress × 256², 768×512
    python bench/load.py --duration 2 --concurrency 1 8 --sizes 256x256     # a quick look
    python bench/load.py --workers 1 --ort-threads 2 --json load.json       # STRATA_* settings of the server
    python bench/load.py --image ../shared/data/images/kodak/kodim01.png --op decompress
    python bench/load.py --url http://127.0.0.1:8000 --api-key "$STRATA_API_KEY"   # a running server
    python bench/load.py --ray-replicas 2 --op compress --sizes 256x256 --concurrency 8    # on Ray Serve

Server settings flags (self-started server only) map to ``STRATA_*`` variables: ``--workers``
(STRATA_WORKERS, inference threads), ``--max-queue``, ``--ort-threads``, ``--provider``,
``--batching``; other ``STRATA_*`` variables of the environment pass through. ``--processes`` is
the number of uvicorn worker processes (``strata serve --workers``), each with its own pool.
``--ray-replicas N`` serves the same app on Ray Serve instead (``python -m strata.server --ray --replicas
N``: a local Ray on this machine, its proxy on the loopback port, N replicas of 1 CPU each, which get
the replica defaults of :mod:`strata.server.ray_serve`: 1 inference thread and 1 onnxruntime thread unless
the flags say otherwise, the batch size in threads with ``--batching on``); it is stopped with Ctrl-C's
signal like the uvicorn server, and the Ray processes with it.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import ipaddress
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
from PIL import Image
from strata.eval.synthetic import synthetic_image

ROOT = Path(__file__).resolve().parent.parent
OPERATIONS = ("compress", "decompress")
OCTET = "application/octet-stream"
FEW_ANSWERS = 20  # below this many answers in a cell's window, its percentiles are flagged as rough
IMAGE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


class BenchError(Exception):
    """A user-facing error: printed as ``load.py: error: …`` with exit status 1."""


# ------------------------------------------------------------------------------------ inputs


@dataclass
class TestImage:
    """An image body to send: its label, encoded bytes, Content-Type and size."""

    label: str
    data: bytes
    content_type: str
    width: int
    height: int


def parse_size(text: str) -> tuple[int, int]:
    """``"768x512"`` → (width 768, height 512)."""
    try:
        w, h = (int(v) for v in text.lower().replace("×", "x").split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size must look like 768x512 (width x height), got {text!r}") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise argparse.ArgumentTypeError(f"image sides must be in 16..8192, got {text!r}")
    return w, h


def make_images(sizes: list[tuple[int, int]], path: str | None) -> list[TestImage]:
    """The synthetic PNG images of ``sizes``, or the one image file at ``path``."""
    if path is not None:
        try:
            data = Path(path).read_bytes()
            with Image.open(io.BytesIO(data)) as im:
                fmt, (w, h) = im.format or "", im.size
        except OSError as e:
            raise BenchError(f"cannot read image {path}: {e}") from None
        return [TestImage(f"{Path(path).name} {w}x{h}", data, IMAGE_TYPES.get(fmt, OCTET), w, h)]
    images = []
    for w, h in sizes:
        buf = io.BytesIO()
        Image.fromarray(synthetic_image(h, w)).save(buf, format="PNG")
        images.append(TestImage(f"{w}x{h}", buf.getvalue(), "image/png", w, h))
    return images


# ------------------------------------------------------------------------------------ the server
def check_loopback(url: str) -> str:
    """``url`` without a trailing slash if its host is a loopback address; :class:`BenchError` otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BenchError(f"--url must be an http(s) URL such as http://127.0.0.1:8000, got {url!r}")
    host = parts.hostname
    if host.lower() != "localhost":
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            addr = None
        mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:127.0.0.1
        if addr is None or not (addr.is_loopback or (mapped is not None and mapped.is_loopback)):
            raise BenchError(f"refusing to load {host!r}: only loopback targets are allowed "
                             "(127.0.0.0/8, localhost or ::1)")
    return url.rstrip("/")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(args: argparse.Namespace) -> dict[str, str]:
    """The ``STRATA_*`` variables the flags set (the rest of the environment passes through)."""
    env = {"STRATA_MODELS_DIR": str(Path(args.models).resolve()) if args.models else str(ROOT / "models"),
           "STRATA_LOG_LEVEL": args.server_log_level}
    for flag in ("workers", "max_queue", "ort_threads", "provider", "batching"):
        value = getattr(args, flag)
        if value is not None:
            env[f"STRATA_{flag.upper()}"] = str(value)
    return env


@contextmanager
def patched_environ(env: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``env`` set, restored afterwards."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def ray_replica_env(env: dict[str, str]) -> dict[str, str]:
    """The ``STRATA_*`` variables a 1-CPU Ray Serve replica gets when ``env`` is set here (its defaults added)."""
    try:
        from strata.server.ray_serve import settings_env
    except ModuleNotFoundError as e:
        raise BenchError(f"--ray-replicas needs the 'ray' extra (no module {e.name!r})") from None
    with patched_environ(env):
        try:
            return settings_env({}, num_cpus=1.0)
        except ValueError as e:
            raise BenchError(f"invalid server settings: {e}") from None


def effective_settings(env: dict[str, str]) -> dict[str, Any]:
    """The settings the spawned server will run with (validated here, so bad flags fail fast)."""
    from pydantic import ValidationError
    from strata.server.config import Settings

    with patched_environ(env):
        try:
            s = Settings()
        except ValidationError as e:
            problems = "; ".join(f"STRATA_{'.'.join(map(str, err['loc'])).upper()}: {err['msg']}"
                                 for err in e.errors())
            raise BenchError(f"invalid server settings: {problems}") from None
    return {"workers": s.workers, "max_queue": s.max_queue, "ort_threads": s.session_threads,
            "ort_threads_setting": s.ort_threads, "batching": s.batching, "models_dir": str(s.models_dir)}


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_ready(url: str, proc: subprocess.Popen[bytes] | None, timeout: float, log: Path | None,
               headers: dict[str, str]) -> dict[str, Any]:
    """Poll ``/readyz`` until it answers 200; returns its JSON."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    with httpx.Client(timeout=5.0, trust_env=False, headers=headers) as http:
        while True:
            if proc is not None and proc.poll() is not None:
                raise BenchError(f"the server exited with status {proc.returncode} before it was ready:\n"
                                 + (log_tail(log) if log else ""))
            try:
                r = http.get(f"{url}/readyz")
                if r.status_code == 200:
                    return r.json()
                last = f"HTTP {r.status_code} {r.text[:200]}"
            except httpx.HTTPError as e:
                last = f"{type(e).__name__}: {e}"
            if time.monotonic() > deadline:
                raise BenchError(f"{url}/readyz not ready after {timeout:.0f} s (last: {last})"
                                 + (f"\n{log_tail(log)}" if log else ""))
            time.sleep(0.2)


def session_stats(sid: int) -> list[tuple[int, float]]:
    """(pid, CPU seconds used so far) of every process of session ``sid`` (Linux ``/proc``; [] elsewhere).

    The server runs in a session of its own, and so do all its descendants: uvicorn's workers, and Ray's daemons
    and workers (which put themselves in process groups of their own, but stay in the session)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited meanwhile
        if len(fields) > 12 and int(fields[3]) == sid:  # state ppid pgrp session … utime(11) stime(12)
            found.append((int(stat.parent.name), (int(fields[11]) + int(fields[12])) / tick))
    return found


def session_cpu_seconds(sid: int) -> float | None:
    """CPU seconds used so far by the live processes of session ``sid``; None without ``/proc``."""
    if not Path("/proc/self/stat").exists():
        return None
    return sum(cpu for _, cpu in session_stats(sid))


def stop_server(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """Ask the server to shut down (SIGINT: uvicorn, or Serve and Ray), then kill what is left of its session (a
    server that did not stop, or Ray processes that outlived it)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    for pid, _ in session_stats(proc.pid):  # the session the server was started in: only what we started
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


@contextmanager
def spawned_server(args: argparse.Namespace, env: dict[str, str]) -> Iterator[tuple[str, dict[str, Any], int | None]]:
    """Run ``python -m strata.server`` on a free loopback port; yields (URL, /readyz JSON, its session id);
    always stops it."""
    port = free_port()
    cmd = [sys.executable, "-m", "strata.server", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--ray", "--replicas", str(args.ray_replicas)] if args.ray_replicas else ["--workers", str(args.processes)]
    log_file = tempfile.NamedTemporaryFile(prefix="strata-load-server-", suffix=".log", delete=False)  # noqa: SIM115
    log = Path(log_file.name)
    # A session of its own: Ctrl-C in the terminal reaches the benchmark, which stops the server in order.
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=log_file, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    log_file.close()
    url = f"http://127.0.0.1:{port}"
    keep = args.keep_server_log  # also kept when the server fails or the run ends in an error
    try:
        ready = wait_ready(url, proc, args.startup_timeout, log, {})
        yield url, ready, proc.pid
        if proc.poll() is not None:
            keep = True
            raise BenchError(f"the server exited (status {proc.returncode}) during the run:\n{log_tail(log)}")
    except KeyboardInterrupt:
        raise
    except BaseException:
        keep = True
        raise
    finally:
        stop_server(proc, grace=60.0 if args.ray_replicas else 15.0)  # Ray's shutdown takes a few seconds
        if not keep:
            log.unlink(missing_ok=True)
        else:
            print(f"server log: {log}", file=sys.stderr)


# ------------------------------------------------------------------------------------ the load
@dataclass
class Job:
    """One request to repeat: what to POST where."""

    operation: str
    image: TestImage
    path: str
    body: bytes
    content_type: str
    params: dict[str, str]


@dataclass
class CellResult:
    operation: str
    image: str
    concurrency: int
    requests: int = 0  # successful (2xx) requests that finished in the measured window
    errors: int = 0
    warmup_s: float = 0.0  # the warm-up it took (at least --warmup, and until every worker had an answer)
    window_s: float = 0.0
    requests_per_s: float = 0.0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    max_ms: float | None = None
    error_kinds: dict[str, int] = field(default_factory=dict)
    first_error: str | None = None
    server_cpu_s: float | None = None  # CPU seconds of the server's processes in the window (self-started, Linux)
    server_cpu_ms_per_request: float | None = None
    client_cpu_share: float | None = None  # CPU seconds of this benchmark in the window / window seconds


def describe_error(response: httpx.Response | None, exc: BaseException | None) -> tuple[str, str]:
    """(kind, message) of a failed request: kind is ``HTTP 503 overloaded`` or the exception's type."""
    if response is not None:
        code = ""
        try:
            body = response.json()
            code, message = body.get("code", ""), body.get("message", response.text)
        except (ValueError, AttributeError):
            message = response.text
        kind = f"HTTP {response.status_code}" + (f" {code}" if code else "")
        return kind, f"{kind}: {str(message)[:300]}"
    name = type(exc).__name__
    return name, f"{name}: {exc}" if str(exc) else name


def error_pause(response: httpx.Response | None) -> float:
    """Seconds a worker waits after a failed request: the server's Retry-After (at most 5 s), else 10 ms."""
    try:
        return min(5.0, max(0.0, float(response.headers["Retry-After"]))) if response is not None else 0.01
    except (KeyError, ValueError):
        return 0.01


async def run_cell(http: httpx.AsyncClient, url: str, job: Job, concurrency: int, warmup: float, duration: float,
                   max_requests: int, server_cpu: Callable[[], float | None] | None = None) -> CellResult:
    """A closed loop of ``concurrency`` workers, measured for ``duration`` seconds after the warm-up.

    The warm-up lasts ``warmup`` seconds and at least until every worker has had one answer, so the
    window starts in the steady state even when a request takes longer than ``warmup``. ``server_cpu`` (the
    server's CPU seconds so far) is read when the window opens and when it closes.
    """
    start = time.perf_counter()
    measure_start = window_end = float("inf")
    latencies: list[float] = []
    kinds: Counter[str] = Counter()
    first_error: list[str] = []
    headers = {"Content-Type": job.content_type}
    answered = 0
    all_answered = asyncio.Event()
    cpu: dict[str, float | None] = {}

    async def worker() -> None:
        nonlocal window_end, answered
        first = True
        while True:
            t0 = time.perf_counter()
            if t0 >= window_end:
                return
            response: httpx.Response | None = None
            exc: BaseException | None = None
            try:
                response = await http.post(f"{url}{job.path}", content=job.body, headers=headers, params=job.params)
            except httpx.HTTPError as e:
                exc = e
            t1 = time.perf_counter()
            if first:
                first, answered = False, answered + 1
                if answered == concurrency:
                    all_answered.set()
            if exc is not None or (response is not None and not response.is_success):
                await asyncio.sleep(error_pause(response))  # errors must not turn into a busy loop
            if not measure_start <= t1 < window_end:
                continue  # warm-up, or finished after the window closed
            if response is not None and response.is_success:
                latencies.append(t1 - t0)
            else:
                kind, message = describe_error(response, exc)
                kinds[kind] += 1
                if not first_error:
                    first_error.append(message)
            if len(latencies) + sum(kinds.values()) >= max_requests:
                window_end = t1

    async def clock() -> None:
        nonlocal measure_start, window_end
        await all_answered.wait()
        await asyncio.sleep(max(0.0, start + warmup - time.perf_counter()))
        cpu["server0"], cpu["client0"] = server_cpu() if server_cpu else None, time.process_time()
        measure_start = time.perf_counter()
        window_end = measure_start + duration
        while (now := time.perf_counter()) < window_end:  # window_end moves earlier when --max-requests is hit
            await asyncio.sleep(min(0.05, window_end - now))
        cpu["server1"], cpu["client1"] = server_cpu() if server_cpu else None, time.process_time()

    await asyncio.gather(clock(), *(worker() for _ in range(concurrency)))
    window = window_end - measure_start
    result = CellResult(job.operation, job.image.label, concurrency, requests=len(latencies),
                        errors=sum(kinds.values()), warmup_s=round(measure_start - start, 3), window_s=round(window, 3),
                        error_kinds=dict(kinds), first_error=first_error[0] if first_error else None)
    if window > 0:
        result.requests_per_s = round(len(latencies) / window, 3)
        result.client_cpu_share = round((cpu["client1"] - cpu["client0"]) / window, 3)  # type: ignore[operator]
    if cpu.get("server0") is not None and cpu.get("server1") is not None:
        result.server_cpu_s = round(cpu["server1"] - cpu["server0"], 2)  # type: ignore[operator]
        if latencies:
            result.server_cpu_ms_per_request = round(1e3 * result.server_cpu_s / len(latencies), 1)
    if latencies:
        ms = 1e3 * np.asarray(latencies)
        p50, p95, p99 = np.percentile(ms, [50, 95, 99])
        result.p50_ms, result.p95_ms, result.p99_ms = round(float(p50), 2), round(float(p95), 2), round(float(p99), 2)
        result.mean_ms, result.max_ms = round(float(ms.mean()), 2), round(float(ms.max()), 2)
    return result


async def prepare_jobs(http: httpx.AsyncClient, url: str, images: list[TestImage], operations: list[str],
                       params: dict[str, str], fmt: str) -> list[Job]:
    """Check one compress → decompress round trip per image and build the requests to repeat."""
    jobs = []
    for image in images:
        r = await http.post(f"{url}/v1/images:compress", content=image.data, params=params,
                            headers={"Content-Type": image.content_type})
        if r.status_code != 200:
            raise BenchError(f"compress of {image.label} failed: {describe_error(r, None)[1]}")
        stream = r.content
        size = (r.headers.get("X-Strata-Width"), r.headers.get("X-Strata-Height"))
        if size != (str(image.width), str(image.height)):
            raise BenchError(f"compress of {image.label} reports size {size}, expected ({image.width}, {image.height})")
        d = await http.post(f"{url}/v1/images:decompress", content=stream, params={"format": fmt},
                            headers={"Content-Type": OCTET})
        if d.status_code != 200:
            raise BenchError(f"decompress of the {image.label} stream failed: {describe_error(d, None)[1]}")
        if fmt == "npy":
            decoded = np.load(io.BytesIO(d.content), allow_pickle=False).shape[:2][::-1]
        else:
            with Image.open(io.BytesIO(d.content)) as im:
                decoded = im.size
        if tuple(decoded) != (image.width, image.height):
            raise BenchError(f"the {image.label} stream decodes to {decoded[0]}x{decoded[1]}, "
                             f"expected {image.width}x{image.height}")
        for op in operations:
            if op == "compress":
                jobs.append(Job(op, image, "/v1/images:compress", image.data, image.content_type, params))
            else:
                jobs.append(Job(op, image, "/v1/images:decompress", stream, OCTET, {"format": fmt}))
    return jobs


def fmt_ms(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"


def print_row(r: CellResult) -> None:
    errors = str(r.errors)
    if r.error_kinds:
        errors += " (" + ", ".join(f"{k} ×{n}" for k, n in sorted(r.error_kinds.items())) + ")"
    client = "–" if r.client_cpu_share is None else f"{100 * r.client_cpu_share:.0f}%"
    print(f"| {r.operation} | {r.image} | {r.concurrency} | {r.requests} | {r.requests_per_s:.2f} | "
          f"{fmt_ms(r.p50_ms)} | {fmt_ms(r.p95_ms)} | {fmt_ms(r.p99_ms)} | {errors} | "
          f"{fmt_ms(r.server_cpu_ms_per_request)} | {client} |", flush=True)


async def run_load(args: argparse.Namespace, url: str, images: list[TestImage],
                   headers: dict[str, str], session: int | None = None) -> list[CellResult]:
    top = max(args.concurrency)
    limits = httpx.Limits(max_connections=top, max_keepalive_connections=top)
    timeout = httpx.Timeout(args.timeout, connect=10.0)
    params = {"layers": str(args.layers)} if args.layers else {}
    results = []
    # trust_env=False: never send loopback traffic through an HTTP(S)_PROXY of the environment.
    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False, headers=headers) as http:
        jobs = await prepare_jobs(http, url, images, args.op, params, args.format)
        print("| operation | image | concurrency | requests | requests/s | p50 ms | p95 ms | p99 ms | errors | "
              "server CPU ms/req | client CPU |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|", flush=True)
        server_cpu = None if session is None else partial(session_cpu_seconds, session)
        for job in jobs:
            for c in args.concurrency:
                result = await run_cell(http, url, job, c, args.warmup, args.duration, args.max_requests, server_cpu)
                print_row(result)
                results.append(result)
    return results


# ------------------------------------------------------------------------------------ main
def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("--url", help="a running server on loopback (default: start one)")
    p.add_argument("--api-key", default=os.environ.get("STRATA_API_KEY"),
                   help="X-API-Key to send (default: $STRATA_API_KEY)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32], help="concurrent workers per cell")
    p.add_argument("--op", nargs="+", choices=OPERATIONS, default=list(OPERATIONS), help="operations")
    p.add_argument("--sizes", type=parse_size, nargs="+", default=[(256, 256), (768, 512)],
                   help="synthetic image sizes, WIDTHxHEIGHT")
    p.add_argument("--image", help="use this image file instead of the synthetic ones")
    p.add_argument("--layers", type=int, help="layers to compress (default: all)")
    p.add_argument("--format", choices=["png", "webp", "npy"], default="png", help="decompress output format")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per cell")
    p.add_argument("--warmup", type=float, default=2.0, help="uncounted seconds before each cell")
    p.add_argument("--max-requests", type=int, default=100_000, help="cap on measured requests per cell")
    p.add_argument("--timeout", type=float, default=120.0, help="per-request timeout in seconds")
    p.add_argument("--json", help="write all numbers to this JSON file")
    s = p.add_argument_group("self-started server (ignored with --url)")
    s.add_argument("--workers", type=int, help="STRATA_WORKERS: inference threads (server default: CPU count)")
    s.add_argument("--max-queue", type=int, help="STRATA_MAX_QUEUE: requests waiting before 503 (default 64)")
    s.add_argument("--ort-threads", type=int, help="STRATA_ORT_THREADS: onnxruntime threads per session "
                   "(default 0: CPU count / workers)")
    s.add_argument("--provider", choices=["auto", "cpu", "cuda"], help="STRATA_PROVIDER")
    s.add_argument("--batching", choices=["auto", "on", "off"], help="STRATA_BATCHING")
    s.add_argument("--processes", type=int, default=1, help="uvicorn worker processes (strata serve --workers)")
    s.add_argument("--ray-replicas", type=int, help="serve on Ray Serve with this many 1-CPU replicas instead of "
                   "uvicorn (strata serve --ray --replicas N; the 'ray' extra)")
    s.add_argument("--models", help="models folder (default: the shipped models/)")
    s.add_argument("--server-log-level", choices=["debug", "info", "warning", "error"], default="warning",
                   help="STRATA_LOG_LEVEL of the server (default warning: no per-request log lines)")
    s.add_argument("--keep-server-log", action="store_true", help="keep the server's log file")
    s.add_argument("--startup-timeout", type=float, default=120.0, help="seconds to wait for /readyz")
    return p


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if any(c < 1 or c > 1024 for c in args.concurrency):
        p.error("--concurrency values must be in 1..1024")
    if not 0 < args.duration <= 600 or not 0 <= args.warmup <= 60:
        p.error("--duration must be in (0, 600] seconds and --warmup in [0, 60]")
    if args.max_requests < 1 or args.timeout <= 0 or not 1 <= args.processes <= 16:
        p.error("--max-requests and --timeout must be positive, --processes in 1..16")
    if args.ray_replicas is not None and (not 1 <= args.ray_replicas <= 16 or args.processes != 1):
        p.error("--ray-replicas must be in 1..16, and --processes (uvicorn) does not apply to it")
    if args.layers is not None and args.layers < 1:
        p.error("--layers must be positive")
    args.concurrency = list(dict.fromkeys(args.concurrency))
    args.op = list(dict.fromkeys(args.op))


def print_header(server: dict[str, Any], url: str, args: argparse.Namespace, images: list[TestImage]) -> None:
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(f"machine: {os.cpu_count()} CPUs ({platform.machine()}, {platform.python_implementation()} "
          f"{platform.python_version()}), load average before the run {load}")
    if server["started"]:
        procs = (f"Ray Serve, {server['replicas']} replica" + ("s" if server["replicas"] > 1 else "") + " of 1 CPU"
                 if server["replicas"] else
                 f"{server['processes']} process" + ("es" if server["processes"] > 1 else ""))
        print(f"server: {url} (started here, {procs}), workers {server['workers']}, "
              f"max_queue {server['max_queue']}, ort threads {server['ort_threads']}"
              f"{' (auto)' if not server['ort_threads_setting'] else ''}, batching {server['batching']}, "
              f"provider {server['provider']}, models {', '.join(server['models'])}")
    else:
        print(f"server: {url} (external; workers / ort threads not visible), provider {server['provider']}, "
              f"models {', '.join(server['models'])}")
    print(f"load: closed loop, {args.warmup:g} s warm-up + {args.duration:g} s per cell, images "
          f"{', '.join(f'{im.label} ({len(im.data)} B)' for im in images)}, layers {args.layers or 'all'}, "
          f"decompress to {args.format}; latencies over 2xx answers\n", flush=True)
    if server["started"]:
        admitted = (server["replicas"] or server["processes"]) * (server["workers"] + server["max_queue"])
        if max(args.concurrency) > admitted:
            print(f"note: concurrency {max(args.concurrency)} exceeds workers + max_queue = {admitted}: "
                  "the excess is refused with 503 overloaded (counted as errors)\n", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = get_parser()
    args = p.parse_args(argv)
    check_args(p, args)

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwinds through the finally blocks that stop the server

    signal.signal(signal.SIGTERM, on_sigterm)
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    results: list[CellResult] = []
    try:
        images = make_images(args.sizes, args.image)
        if args.url:
            url = check_loopback(args.url)
            ready = wait_ready(url, None, 10.0, None, headers)
            server: dict[str, Any] = {"started": False, "url": url}
            server_cm: Any = _null(url, ready)
        else:
            env = server_env(args)
            if args.ray_replicas:
                env = ray_replica_env(env)
            server = {"started": True, "processes": args.processes, "replicas": args.ray_replicas,
                      **effective_settings(env)}
            server_cm = spawned_server(args, env)
        with server_cm as (url, ready, session):
            server.update(url=url, provider=ready.get("provider"), models=ready.get("models", []))
            print_header(server, url, args, images)
            results = asyncio.run(run_load(args, url, images, headers, session))
    except BenchError as e:
        print(f"load.py: error: {e}", file=sys.stderr)
        return 1
    except httpx.HTTPError as e:  # the round-trip check before the load
        print(f"load.py: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; the server was stopped", file=sys.stderr)
        return 130

    few = [r for r in results if r.requests + r.errors < FEW_ANSWERS]
    if few:
        print(f"\nnote: fewer than {FEW_ANSWERS} answers in the window of "
              + ", ".join(f"{r.operation} {r.image} c={r.concurrency}" for r in few)
              + ": rough percentiles; raise --duration for these")
    errored = [r for r in results if r.first_error]
    if errored:
        print("\nfirst error of each cell with errors:")
        for r in errored:
            print(f"- {r.operation} {r.image} c={r.concurrency}: {r.first_error}")
    if args.json:
        report = {
            "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                        "python": platform.python_version()},
            "server": server,
            "load": {"duration_s": args.duration, "warmup_s": args.warmup, "timeout_s": args.timeout,
                     "max_requests": args.max_requests, "layers": args.layers, "format": args.format,
                     "images": [{"label": im.label, "bytes": len(im.data), "width": im.width, "height": im.height}
                                for im in images]},
            "results": [asdict(r) for r in results],
        }
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


@contextmanager
def _null(url: str, ready: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], int | None]]:
    yield url, ready, None


if __name__ == "__main__":
    sys.exit(main())
