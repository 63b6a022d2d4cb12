"""Peak memory and time of compressing and decompressing large images with the shipped image model.

    python bench/memory.py                      # 1024², 2048² and 4096²
    python bench/memory.py --sides 4096 --one-pass

Each cell runs in a fresh process and reports its peak resident memory (``ru_maxrss``) and wall time:
``compress`` encodes a 4096²-style test picture (sparse dots on black), ``decompress`` decodes the
stream of one layer of zero codes whose header claims the size (the 56-byte stream that once took the
server past 9 GB). ``--one-pass`` runs the networks on the whole image instead of tiles, for comparison
(expect several GB at 4096²).
"""

from __future__ import annotations

import argparse
import subprocess
import sys

CELL = r"""
import resource, sys, time
import numpy as np
from strata import ImageCodec, ImageCodes, Registry
from strata.bitstream import StreamLimits

side, what, one_pass = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
codec = ImageCodec.load(Registry(), limits=StreamLimits(max_pixels=side * side))
if one_pass:
    codec.one_pass_pixels = 1 << 62
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
if what == "compress":
    image = np.zeros((side, side, 3), np.uint8)
    image[::7, ::5] = 200
    n = len(codec.compress(image))
else:
    codes = ImageCodes(np.zeros((1, side // 8, side // 8), np.int64), (side, side), codec.name)
    stream = codec.compress_codes(codes)
    n = len(stream)
    codec.decompress(stream)
print(f"{time.perf_counter() - t:.1f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} {loaded:.0f} {n}")
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sides", type=int, nargs="+", default=[1024, 2048, 4096])
    p.add_argument("--one-pass", action="store_true", help="no tiles: the networks on the whole image")
    args = p.parse_args(argv)
    print("| image | operation | networks | stream bytes | seconds | peak RSS (MiB) | RSS after load (MiB) |")
    print("|---|---|---|---:|---:|---:|---:|")
    for side in args.sides:
        for what in ("compress", "decompress"):
            r = subprocess.run([sys.executable, "-c", CELL, str(side), what, "1" if args.one_pass else "0"],
                               capture_output=True, text=True)
            if r.returncode != 0:
                reason = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"
                print(f"| {side}×{side} | {what} | failed: {reason} |")
                continue
            seconds, peak, loaded, n = r.stdout.split()
            mode = "one call" if args.one_pass else "tiled over 1 MP"
            print(f"| {side}×{side} | {what} | {mode} | {n} | {seconds} | {peak} | {loaded} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
