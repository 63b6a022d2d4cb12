"""Fuzz the stream reader, the entropy decoders and the HTTP payload parsers with mutated inputs.

    python bench/fuzz.py                       # 1 000 000 inputs, spread over all targets
    python bench/fuzz.py --inputs 20000 --targets stream npy --seed 3

Prints, per target, the inputs run, the rate, how many were accepted, the expected errors by class
(what the service answers with a 4xx) and the crashes (any other exception). Crashing inputs are
written to ``--crashes DIR`` with their traceback. Exit status 1 when anything crashed. The targets,
the mutator and the seed corpus are in tests/fuzz/ (see tests.fuzz.harness).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.fuzz lives beside the package, not in it

from tests.fuzz.harness import build_targets, fuzz  # noqa: E402

# Inputs per target relative to the others: the parsers are fast, the entropy decoders and media readers slower.
WEIGHTS = {"stream": 4, "image-stream": 2, "audio-stream": 2, "npy": 3, "json": 2, "image-file": 1, "sound-file": 1}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inputs", type=int, default=1_000_000, help="total inputs over all targets")
    p.add_argument("--targets", nargs="+", choices=sorted(WEIGHTS), default=sorted(WEIGHTS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--crashes", default="fuzz-crashes", help="folder for crashing inputs")
    p.add_argument("--json", help="write the table to this JSON file")
    args = p.parse_args(argv)
    if args.inputs < 1:
        p.error("--inputs must be positive")
    targets = build_targets()
    total_weight = sum(WEIGHTS[t] for t in args.targets)
    rows, crashed = [], 0
    print("| target | inputs | inputs/s | accepted | expected errors | crashes |\n|---|---:|---:|---:|---|---:|")
    for name in args.targets:
        n = max(1, args.inputs * WEIGHTS[name] // total_weight)
        out = fuzz(targets[name], n, seed=args.seed)
        errors = ", ".join(f"{k} {v}" for k, v in out.errors.most_common())
        print(f"| {name} | {out.inputs} | {out.inputs / out.seconds:,.0f} | {out.ok} | {errors} | {len(out.crashes)} |",
              flush=True)
        rows.append({"target": name, "inputs": out.inputs, "seconds": round(out.seconds, 2), "accepted": out.ok,
                     "errors": dict(out.errors), "crashes": len(out.crashes)})
        for data, trace in out.crashes:
            folder = Path(args.crashes) / name
            folder.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256(data).hexdigest()[:16]
            (folder / f"{digest}.bin").write_bytes(data)
            (folder / f"{digest}.txt").write_text(trace)
        crashed += len(out.crashes)
    total = sum(r["inputs"] for r in rows)
    print(f"\n{total} inputs, {crashed} crashes (seed {args.seed})")
    if args.json:
        Path(args.json).write_text(json.dumps({"seed": args.seed, "rows": rows}, indent=2) + "\n")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
