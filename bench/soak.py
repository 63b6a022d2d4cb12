"""Soak: minutes of mixed image and audio load with bad requests mixed in, against a server on loopback.

    python bench/soak.py                    # 10 minutes, 4 closed-loop clients, a server it starts itself
    python bench/soak.py --duration 60 --clients 8 --json soak.json

Each client repeats a random request from a fixed mix: image compress / decompress / encode, audio
compress / decompress (2 s of sound), and bad ones (not an image, a cut stream, a stream claiming a
4096² image, an unknown model, a wrong Content-Type). Every answer is checked against the status the
request must get (200 for the good ones, the documented 4xx for the bad ones). Every 5 s the server's
resident memory, threads and open file descriptors are sampled from /proc. The run fails (exit 1)
on any unexpected status or transport error, or when the memory at the end is more than
``--max-growth`` MiB over that after the first minute. Loopback only; bounded in time.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from load import BenchError, check_loopback, spawned_server
from strata.eval.synthetic import synthetic_image

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Request:
    name: str
    path: str
    body: bytes
    content_type: str
    expect: tuple[int, ...]
    params: tuple[tuple[str, str], ...] = ()


def png(h: int, w: int, seed: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(synthetic_image(h, w, seed)).save(buf, format="PNG")
    return buf.getvalue()


def wav(seconds: float) -> bytes:
    import io

    import soundfile as sf

    t = np.arange(int(seconds * 22050)) / 22050
    x = (0.2 * np.sin(2 * np.pi * (150 + 40 * np.sin(2 * np.pi * 0.5 * t)) * t)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, 22050, format="WAV")
    return buf.getvalue()


def requests_mix(url: str) -> list[Request]:
    """The fixed mix; streams for the decoding requests are made through the server first."""
    image = png(256, 256, 1)
    sound = wav(2.0)
    with httpx.Client(timeout=120, trust_env=False) as http:
        image_stream = http.post(f"{url}/v1/images:compress", content=image,
                                 headers={"Content-Type": "image/png"}).raise_for_status().content
        sound_stream = http.post(f"{url}/v1/audio:compress", content=sound,
                                 headers={"Content-Type": "audio/wav"}).raise_for_status().content
    huge = bytearray(image_stream[:64])  # a header claiming more pixels than allowed: refused from the header
    octet, mix = "application/octet-stream", []
    mix += [Request("image compress", "/v1/images:compress", image, "image/png", (200,))] * 4
    mix += [Request("image decompress", "/v1/images:decompress", image_stream, octet, (200,))] * 4
    mix += [Request("image encode", "/v1/images:encode", image, "image/png", (200,))] * 2
    mix += [Request("audio compress", "/v1/audio:compress", sound, "audio/wav", (200,))] * 2
    mix += [Request("audio decompress", "/v1/audio:decompress", sound_stream, octet, (200,))] * 2
    mix += [
        Request("bad: not an image", "/v1/images:compress", b"\x89PNG not really" * 50, "image/png", (415, 422)),
        Request("bad: cut stream", "/v1/images:decompress", image_stream[: len(image_stream) // 2], octet, (422,)),
        Request("bad: garbage stream", "/v1/audio:decompress", bytes(huge), octet, (413, 422)),
        Request("bad: unknown model", "/v1/images:compress", image, "image/png", (404,), (("model", "nope"),)),
        Request("bad: content type", "/v1/images:compress", image, "text/plain", (415,)),
        Request("bad: layers", "/v1/images:compress", image, "image/png", (422,), (("layers", "99"),)),
    ]
    return mix


def proc_stats(pid: int) -> dict[str, int]:
    """Resident memory (KiB), threads and open descriptors of ``pid`` and its children (uvicorn workers)."""
    pids = [pid] + [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    rss = threads = fds = 0
    for p in pids:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{p}/status").read_text().splitlines() if ":" in line)
        rss += int(fields["VmRSS"].split()[0])
        threads += int(fields["Threads"])
        fds += len(list(Path(f"/proc/{p}/fd").iterdir()))
    return {"rss_kib": rss, "threads": threads, "fds": fds}


def run(url: str, pid: int, args: argparse.Namespace) -> dict:
    mix = requests_mix(url)
    stop = time.monotonic() + args.duration
    counts: Counter[tuple[str, int | str]] = Counter()
    unexpected: list[str] = []
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(timeout=120, trust_env=False) as http:
            while time.monotonic() < stop:
                req = rng.choice(mix)
                try:
                    r = http.post(f"{url}{req.path}", content=req.body, params=dict(req.params),
                                  headers={"Content-Type": req.content_type})
                    status: int | str = r.status_code
                    ok = r.status_code in req.expect or r.status_code == 503 and "Retry-After" in r.headers
                except httpx.HTTPError as e:
                    status, ok = type(e).__name__, False
                with lock:
                    counts[(req.name, status)] += 1
                    if not ok:
                        unexpected.append(f"{req.name}: {status}")

    samples = [(0.0, proc_stats(pid))]
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.clients)]
    start = time.monotonic()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(5)
        samples.append((time.monotonic() - start, proc_stats(pid)))
    for t in threads:
        t.join()
    samples.append((time.monotonic() - start, proc_stats(pid)))
    warm = next((s for t, s in samples if t >= min(60.0, args.duration / 2)), samples[-1])
    end, peak = samples[-1][1], max(s["rss_kib"] for _, s in samples)
    return {
        "duration_s": round(time.monotonic() - start, 1), "clients": args.clients,
        "requests": sum(counts.values()), "by_request": {f"{n} -> {s}": c for (n, s), c in sorted(counts.items(),
                                                                                                   key=str)},
        "unexpected": unexpected[:50], "unexpected_count": len(unexpected),
        "rss_mib": {"start": round(samples[0][1]["rss_kib"] / 1024, 1),
                    "after_warmup": round(warm["rss_kib"] / 1024, 1),
                    "end": round(end["rss_kib"] / 1024, 1), "peak": round(peak / 1024, 1)},
        "threads": {"start": samples[0][1]["threads"], "end": end["threads"]},
        "fds": {"start": samples[0][1]["fds"], "end": end["fds"]},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    p.add_argument("--clients", type=int, default=4, help="concurrent closed-loop clients")
    p.add_argument("--max-growth", type=float, default=64.0, help="MiB of RSS growth after warm-up that fails")
    p.add_argument("--json", help="write the report to this file")
    p.add_argument("--models", help="models folder (default: the shipped models)")
    args = p.parse_args(argv)
    if not 1 <= args.duration <= 3600 or not 1 <= args.clients <= 64:
        p.error("--duration must be in 1..3600 s and --clients in 1..64")
    server_args = argparse.Namespace(processes=1, keep_server_log=False, startup_timeout=120.0)
    env = {"STRATA_MODELS_DIR": str(Path(args.models).resolve()) if args.models else str(ROOT / "models"),
           "STRATA_LOG_LEVEL": "warning"}
    try:
        with spawned_server(server_args, env) as (url, _):
            check_loopback(url)
            pid = _server_pid(url)
            report = run(url, pid, args)
    except BenchError as e:
        print(f"soak: {e}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    grew = report["rss_mib"]["end"] - report["rss_mib"]["after_warmup"]
    failed = report["unexpected_count"] > 0 or grew > args.max_growth
    print(f"{report['requests']} requests, {report['unexpected_count']} unexpected; RSS {report['rss_mib']} MiB "
          f"(grew {grew:+.1f} after warm-up); threads {report['threads']}; fds {report['fds']}: "
          + ("FAILED" if failed else "ok"))
    return 1 if failed else 0


def _server_pid(url: str) -> int:
    """The pid of the process listening on ``url``'s port (the server this script started)."""
    port = int(url.rsplit(":", 1)[1])
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == "0A":  # LISTEN
                inodes.add(cols[9])
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                for fd in (proc / "fd").iterdir():
                    if fd.readlink().name.removeprefix("socket:[").rstrip("]") in inodes:
                        return int(proc.name)
            except OSError:
                continue
    raise BenchError(f"no process listens on port {port}")


if __name__ == "__main__":
    sys.exit(main())
