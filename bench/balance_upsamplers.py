"""Where HiFi-GAN's frame-rate comb comes from: balance a trained generator's upsamplers, no retraining.

A transposed convolution is zero insertion followed by a filter, and zero insertion copies the
input's DC to every multiple of the input rate. :class:`strata.train.nets.hifigan_model.BalancedPhases` makes
each output phase's taps sum to the same value, which nulls those images. This script loads a
generator trained without the constraint, balances the weights of its first ``s`` upsampling stages
(``s`` = 0 .. all; the first stage runs at the mel frame rate, 86 Hz), and prints, for each ``s``,
the 86 Hz comb measure and the frame-locked share of ``bench/vocoder_bands.py``, the output's DC
offset over its RMS, the 0–0.5 kHz magnitude error and PESQ-WB, on true mels of speech test clips.

If the comb falls to the reference's level once the first stage is balanced, the comb is those
images. The PESQ column says how much the rest of the network relied on them (it was trained with
them), i.e. what retraining with ``--balanced-upsampling`` has to win back.

    python bench/balance_upsamplers.py --checkpoint checkpoints/voc-v3-36358.pt --limit 8
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch
from strata.eval.metrics_audio import pesq_wb
from strata.frontend.audio import list_audio, log_mel, read_audio_file
from strata.train.nets.hifigan_model import BalancedPhases, Generator
from strata.train.vocoder import SAMPLE_RATE, load_generator

try:
    from vocoder_bands import band_errors, frame_locked, frame_rate_comb
except ImportError:  # run as python -m bench.balance_upsamplers
    from bench.vocoder_bands import band_errors, frame_locked, frame_rate_comb


def balanced_copy(gen: Generator, stages: int) -> Generator:
    """A folded copy of ``gen`` whose first ``stages`` transposed convolutions are balanced."""
    out = Generator(dataclasses.replace(gen.cfg, balanced_upsampling=False))
    out.load_state_dict(gen.state_dict())
    out.remove_weight_norm()
    with torch.no_grad():
        for up in list(out.ups)[:stages]:
            up.weight.copy_(BalancedPhases(up.stride[0])(up.weight))
    return out.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=Path("checkpoints/voc-v3-36358.pt"))
    p.add_argument("--data", default="../shared/data/audio/speech/test")
    p.add_argument("--limit", type=int, default=8)
    args = p.parse_args()
    gen = load_generator(args.checkpoint)
    if gen.cfg.balanced_upsampling:
        raise SystemExit(f"{args.checkpoint} is already balanced")
    files = list_audio(Path(args.data))[: args.limit]
    if not files:
        raise SystemExit(f"no sound files in {args.data}")
    clips = [read_audio_file(f) for f in files]
    print(f"\n{len(files)} clips from {args.data}; generator {args.checkpoint}; true mels, no DC removal\n")
    print("| balanced stages | 86 Hz comb | frame-locked share | DC / RMS | 0–0.5 kHz error (dB) | PESQ-WB |")
    print("|---:|---:|---:|---:|---:|---:|")
    for stages in range(len(gen.ups) + 1):
        g = balanced_copy(gen, stages)
        rows = []
        for ref in clips:
            with torch.no_grad():
                out = g(torch.from_numpy(log_mel(ref))[None])[0, 0].numpy()[: len(ref)]
            ref = ref[: len(out)]
            dc = abs(out.mean()) / (out.std() + 1e-12)
            rows.append([frame_rate_comb(out), frame_locked(out), dc, band_errors(ref, out)[0],
                         pesq_wb(ref, out, SAMPLE_RATE)])
        m = np.mean(rows, axis=0)
        label = "none (as trained)" if stages == 0 else f"first {stages}"
        print(f"| {label} | {m[0]:.1f} | {m[1]:.3f} | {m[2]:.2f} | {m[3]:.2f} | {m[4]:.2f} |")
    ref_rows = [[frame_rate_comb(r), frame_locked(r)] for r in clips]
    comb, locked = np.mean(ref_rows, axis=0)
    print(f"\nThe reference clips: 86 Hz comb {comb:.1f}, frame-locked share {locked:.3f}")


if __name__ == "__main__":
    main()
