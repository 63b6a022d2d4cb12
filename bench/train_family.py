"""Train the image codec with a chosen quantizer family (rvq, hrvq, rsq) without going through the CLI.

Every setting except the family and the schedule length is ``ImageTrainConfig``'s default,
so runs of different families are comparable. A resumed run reads the run folder's
``config.json`` (only ``--steps``/``--eval-every`` override it)::

    python bench/train_family.py --family hrvq --run /work/runs/image-hrvq --steps 3000
    python bench/train_family.py --run /work/runs/image-hrvq --resume            # continue it
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from codec.quantize.families import FAMILIES  # noqa: E402
from codec.train.image import ImageTrainConfig, train  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=FAMILIES, default="rvq")
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "images"))
    ap.add_argument("--steps", type=int, default=None, help="schedule length (default: the config's)")
    ap.add_argument("--eval-every", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--max-minutes", type=float, default=None)
    ap.add_argument("--resume", action="store_true", help="continue from RUN/last.pt with RUN/config.json")
    args = ap.parse_args(argv)

    saved = args.run / "config.json"
    if args.resume and saved.exists():
        cfg = ImageTrainConfig.from_dict(json.loads(saved.read_text()))
    else:
        cfg = ImageTrainConfig(data=args.data, quantizer=args.family)
    overrides = {k: v for k, v in (("steps", args.steps), ("eval_every", args.eval_every), ("threads", args.threads))
                 if v is not None}
    cfg = replace(cfg, **overrides)
    print(f"training {cfg.quantizer}: {cfg.quantizer_config} for {cfg.steps} steps in {args.run}", flush=True)
    best = train(cfg, args.run, resume=args.resume, max_minutes=args.max_minutes)
    print(f"best checkpoint: {best}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
