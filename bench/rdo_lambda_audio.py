"""Choose the encoder's rate–distortion λ (:mod:`strata.quantize.rdo`) of an audio model on held-out training clips.

The clips are the ones the model's training held out for selection (``strata.train.data.split_heldout`` with
the fraction and sets of the model's training config), never a test split. For each λ it compresses every
clip at every layer count, decodes the log-mel, and reports mean kbit/s and mel RMSE
(:func:`strata.eval.metrics_audio.log_mel_rmse`) per layer count, the BD-rate against λ = 0 over the whole
curve (quality: the mel SNR, −20·log10 RMSE), and the encode time. The λ with the lowest BD-rate wins;
``--write`` records it in the models folder's manifest (``extra.rdo_lambda``, not part of the weights hash,
so every stream stays valid) and the codec uses it by default from then on::

    python bench/rdo_lambda_audio.py --model audio-rvq8 --data ../shared/data/audio \\
        --lambdas 0,0.05,0.1,0.2,0.4 [--write]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from strata.audio import SAMPLE_RATE, AudioCodec
from strata.bitstream import truncate
from strata.eval.metrics import bd_rate
from strata.eval.metrics_audio import log_mel_rmse
from strata.frontend.audio import list_audio, log_mel, read_audio_file
from strata.registry import Registry, write_manifest
from strata.train.data import split_heldout


def heldout_clips(codec: AudioCodec, data: Path, limit: int | None) -> list[np.ndarray]:
    """The model's held-out training clips (its config's sets and fraction), at most ``limit`` per set."""
    cfg = codec.entry.extra.get("config", {})
    clips = []
    for s in cfg.get("sets", ["speech", "environment"]):
        _, held = split_heldout(list_audio(data / s / "train"), float(cfg.get("heldout", 0.1)))
        clips += [read_audio_file(p) for p in held[:limit]]
    return [c for c in clips if c.size > 2048]


def curve(codec: AudioCodec, clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean kbps and mel RMSE per layer count over ``clips``, and the mean encode time (s) of the full stream."""
    kbps, rmse, seconds = [], [], []
    for x in clips:
        t0 = time.perf_counter()
        full = codec.compress(x)
        seconds.append(time.perf_counter() - t0)
        ref, secs = log_mel(x), x.size / SAMPLE_RATE
        rows = []
        for k in range(1, codec.layers + 1):
            stream = truncate(full, k)
            mel = codec.decompress_mel(stream)
            n = min(ref.shape[1], mel.shape[1])
            rows.append((8 * len(stream) / secs / 1000, log_mel_rmse(ref[:, :n], mel[:, :n])))
        kbps.append([r[0] for r in rows])
        rmse.append([r[1] for r in rows])
    return np.mean(kbps, 0), np.mean(rmse, 0), float(np.mean(seconds))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=Path, help="models folder (default: the shipped models)")
    ap.add_argument("--model", help="model name (default: the default audio model)")
    ap.add_argument("--data", type=Path, required=True, help="folder with <set>/train/ sounds (the held-out part "
                    "of each is used)")
    ap.add_argument("--lambdas", default="0,0.05,0.1,0.2,0.4")
    ap.add_argument("--limit", type=int, help="held-out clips per set")
    ap.add_argument("--write", action="store_true", help="record the best λ in the manifest")
    ap.add_argument("--out", type=Path, help="also write the table as JSON here")
    args = ap.parse_args()
    registry = Registry(args.models)
    name = args.model or registry.default("audio").name
    clips = heldout_clips(AudioCodec.load(registry, name), args.data, args.limit)
    lambdas = [float(x) for x in args.lambdas.split(",") if x.strip()]
    if 0.0 not in lambdas:
        lambdas.insert(0, 0.0)
    rows = {lam: curve(AudioCodec.load(registry, name, rdo_lambda=lam), clips) for lam in lambdas}
    base_kbps, base_rmse, _ = rows[0.0]
    print(f"{name} on {len(clips)} held-out training clips of {args.data}")
    print(f"{'lambda':>8} {'BD-rate':>8} {'encode s':>9}  kbps/mel RMSE per layer count")
    results = []
    for lam, (r, e, s) in rows.items():
        rate = bd_rate(base_kbps, -20 * np.log10(base_rmse), r, -20 * np.log10(e)) if lam else 0.0
        results.append({"lambda": lam, "bd_rate": rate, "encode_s": s, "kbps": r.tolist(), "mel_rmse": e.tolist()})
        pts = " ".join(f"{x:.2f}/{y:.3f}" for x, y in zip(r, e, strict=True))
        print(f"{lam:>8g} {rate:>+7.2f}% {s:>9.3f}  {pts}")
    best = min(results, key=lambda r: r["bd_rate"])
    print(f"best λ: {best['lambda']:g} ({best['bd_rate']:+.2f}% BD-rate against λ = 0)")
    if args.out:
        args.out.write_text(json.dumps({"model": name, "data": str(args.data), "clips": len(clips),
                                        "results": results, "best": best["lambda"]}, indent=2) + "\n")
    if args.write:
        entries = dict(registry.entries)
        entry = entries[name]
        extra = {**entry.extra, "rdo_lambda": best["lambda"], "rdo_lambda_chosen_on": "held-out training clips"}
        entries[name] = dataclasses.replace(entry, extra=extra)
        write_manifest(registry.root, entries, dict(registry.defaults))
        print(f"recorded rdo_lambda = {best['lambda']:g} for {name} in {registry.root / 'manifest.json'}")


if __name__ == "__main__":
    main()
