"""Where a vocoder loses quality: its STFT magnitude error by frequency band, and PESQ-WB with the
magnitude or the phase swapped for the reference's.

For each clip (the true log-mel of a test sound, no codec) the shipped HiFi-GAN as served (the
network, then its default mel-consistency refinement), the network alone (``refine=0``) and
Griffin-Lim (numpy, 32 iterations) resynthesise the waveform; ``--refine K ...`` adds other
iteration counts. Per band, the table gives the mean absolute
difference in dB between the vocoder's and the reference's STFT magnitudes (n_fft 1024, hop 256,
Hann) over speech frames (within 40 dB of the clip's loudest frame). Two oracle columns split
PESQ-WB between the two halves of a short-time spectrum:

- *reference magnitude, vocoder phase*: what a perfect magnitude would score with this phase;
- *vocoder magnitude, reference phase*: what a perfect phase would score with this magnitude.

The column that moves PESQ more says what to train for. The last column measures a frame-rate
buzz: the median, over the first 12 multiples of 22 050 / 256 ≈ 86 Hz (the mel frame rate), of the
whole clip's spectrum at that frequency over the median within ±40 Hz (about 1 for a sound without
such a comb; the reference's value is printed under the table), and the *frame-locked share*: the RMS of
the clip's mean 256-sample frame over the clip's RMS, DC removed (the part of the output repeated
every frame; ``frame_locked`` in the training log). Prints a markdown table (means over
clips); ``--plot`` also draws the 0–4 kHz spectrograms of the first clip (needs matplotlib).
``--checkpoint`` adds generators from training checkpoints (torch, weight norm kept; DC removed as
the served vocoder does), e.g. to compare a run with the shipped vocoder.

    python bench/vocoder_bands.py --data ../shared/data/audio/speech/test --limit 12
    python bench/vocoder_bands.py --checkpoint runs/vocoder/best.pt
    python bench/vocoder_bands.py --refine 1 2 4 16
    python bench/vocoder_bands.py --data ../shared/data/audio/speech/train --heldout --limit 28 \
        --checkpoint checkpoints/voc-v3-36358.pt --checkpoint-refine 8
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from pathlib import Path

import librosa
import numpy as np
from strata.audio import SAMPLE_RATE, AudioCodec
from strata.eval.metrics_audio import pesq_wb
from strata.frontend.audio import list_audio, log_mel, read_audio_file
from strata.registry import Registry
from strata.vocoder.griffinlim import griffin_lim

BANDS = ((0, 500), (500, 1000), (1000, 2000), (2000, 4000), (4000, 8000))  # Hz
N_FFT, HOP = 1024, 256


def stft(x: np.ndarray) -> np.ndarray:
    """``[bins, frames]`` complex STFT, Hann, centred with reflect padding."""
    return librosa.stft(x.astype(np.float64), n_fft=N_FFT, hop_length=HOP, window="hann", pad_mode="reflect")


def istft(spec: np.ndarray, length: int) -> np.ndarray:
    """Inverse of :func:`stft`, ``length`` samples."""
    return librosa.istft(spec, hop_length=HOP, window="hann", length=length).astype(np.float32)


def band_errors(ref: np.ndarray, deg: np.ndarray) -> list[float]:
    """Mean |20·log10 |S_deg| − 20·log10 |S_ref|| (dB) per band of :data:`BANDS`, over speech frames."""
    r, d = np.abs(stft(ref)), np.abs(stft(deg))
    frame_db = 10 * np.log10((r**2).sum(axis=0) + 1e-12)
    speech = frame_db > frame_db.max() - 40
    freqs = np.fft.rfftfreq(N_FFT, 1 / SAMPLE_RATE)
    diff = np.abs(20 * np.log10(d + 1e-6) - 20 * np.log10(r + 1e-6))[:, speech]
    return [float(diff[(freqs >= lo) & (freqs < hi)].mean()) for lo, hi in BANDS]


def frame_rate_comb(x: np.ndarray, harmonics: int = 12) -> float:
    """Median over k = 1..harmonics of |X(k·rate/hop)| / median |X| within ±40 Hz (whole-clip spectrum)."""
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    ratios = []
    for k in range(1, harmonics + 1):
        fk = k * SAMPLE_RATE / HOP
        i = int(np.argmin(np.abs(freqs - fk)))
        near = (freqs > fk - 40) & (freqs < fk + 40)
        ratios.append(spec[max(i - 2, 0): i + 3].max() / np.median(spec[near]))
    return float(np.median(ratios))


def frame_locked(x: np.ndarray) -> float:
    """RMS of the mean ``HOP``-sample frame over the RMS of ``x`` (DC removed first)."""
    x = x[: len(x) // HOP * HOP].astype(np.float64)
    x = x - x.mean()
    rms = np.sqrt((x**2).mean())
    return float(np.sqrt((x.reshape(-1, HOP).mean(axis=0) ** 2).mean()) / rms) if rms > 0 else 0.0


def oracle_pesq(ref: np.ndarray, deg: np.ndarray) -> tuple[float, float]:
    """PESQ-WB of (reference magnitude, vocoder phase) and of (vocoder magnitude, reference phase)."""
    r, d = stft(ref), stft(deg)
    ref_mag = istft(np.abs(r) * np.exp(1j * np.angle(d)), len(ref))
    ref_phase = istft(np.abs(d) * np.exp(1j * np.angle(r)), len(ref))
    return pesq_wb(ref, ref_mag, SAMPLE_RATE), pesq_wb(ref, ref_phase, SAMPLE_RATE)


def plot(path: Path, ref: np.ndarray, outputs: dict[str, np.ndarray]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {"reference": ref, **outputs}
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.2 * len(panels)), sharex=True)
    freqs = np.fft.rfftfreq(N_FFT, 1 / SAMPLE_RATE)
    top = int(np.searchsorted(freqs, 4000))
    for ax, (name, x) in zip(axes, panels.items(), strict=True):
        db = 20 * np.log10(np.abs(stft(x))[:top] + 1e-6)
        ax.imshow(db, origin="lower", aspect="auto", vmin=db.max() - 80, vmax=db.max(), cmap="magma",
                  extent=(0, len(x) / SAMPLE_RATE, 0, freqs[top - 1] / 1000))
        ax.set_ylabel("kHz")
        ax.set_title(name, fontsize=9)
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"\nwrote {path}")


def served_vocoders(vocoder, extra: list[int]) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """The served HiFi-GAN (network + its default refinement), the network alone, and ``extra`` iteration counts."""
    rows = {f"HiFi-GAN (served: {vocoder.refine} refinement it.)": vocoder,
            "HiFi-GAN network alone (refine=0)": partial(vocoder, refine=0)}
    for k in extra:
        rows.setdefault(f"HiFi-GAN, {k} refinement it.", partial(vocoder, refine=k))
    return rows


def checkpoint_vocoder(path: Path, iterations: int = 0):
    """``(name, log-mel → waveform)`` for a generator checkpoint, run with torch, then ``iterations`` of
    mel-consistency refinement as the served vocoder does (0: the network's output, DC removed)."""
    import torch
    from strata.train.vocoder import load_generator
    from strata.vocoder.dc import remove_dc
    from strata.vocoder.refine import refine

    gen = load_generator(path)
    step = torch.load(path, map_location="cpu", weights_only=False).get("step")

    def vocode(mel: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = gen(torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32))[None])[0, 0].numpy()
        out = remove_dc(out.copy())
        return np.clip(refine(out, mel, iterations, in_place=True) if iterations else out, -1, 1)

    refined = f", {iterations} refinement it." if iterations else ""
    return f"{path.parent.name}/{path.name} (step {step}{refined})", vocode


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/audio/speech/test")
    p.add_argument("--limit", type=int, default=12)
    p.add_argument("--model")
    p.add_argument("--plot", type=Path, help="write the first clip's spectrograms to this PNG")
    p.add_argument("--refine", type=int, nargs="*", default=[],
                   help="also score the served HiFi-GAN with these numbers of refinement iterations")
    p.add_argument("--checkpoint", type=Path, nargs="*", default=[],
                   help="also score these generator checkpoints (best.pt, last.pt, vocoder.pt; needs torch)")
    p.add_argument("--checkpoint-refine", type=int, nargs="*", default=[],
                   help="also score the checkpoints with these numbers of refinement iterations")
    p.add_argument("--heldout", action="store_true",
                   help="--data is a training split: use the files training holds out for selection (never trained "
                   "on), to choose between generators without looking at the test split")
    args = p.parse_args()
    codec = AudioCodec.load(Registry(), args.model)
    vocoders = served_vocoders(codec.vocoder, args.refine)
    extra = set(list(vocoders)[2:])  # the --refine rows
    vocoders["Griffin-Lim (32 it.)"] = griffin_lim
    for path in args.checkpoint:
        for k in dict.fromkeys((0, *args.checkpoint_refine)):
            name, vocode = checkpoint_vocoder(path, k)
            vocoders[name] = vocode
    rows: dict[str, list[list[float]]] = {name: [] for name in vocoders}
    ref_comb = []
    files = list_audio(Path(args.data))
    if args.heldout:
        from strata.train.data import split_heldout
        from strata.train.vocoder import VocoderTrainConfig

        files = split_heldout(files, VocoderTrainConfig.heldout)[1]
    files = files[: args.limit]
    if not files:
        raise SystemExit(f"no sound files in {args.data}")
    for i, f in enumerate(files):
        ref = read_audio_file(f)
        mel = log_mel(ref)
        ref_comb.append([frame_rate_comb(ref), frame_locked(ref)])
        outputs = {}
        for name, vocode in vocoders.items():
            out = vocode(mel)[: len(ref)]
            ref_cut = ref[: len(out)]
            outputs[name] = out
            pesq = pesq_wb(ref_cut, out, SAMPLE_RATE)
            rows[name].append([*band_errors(ref_cut, out), pesq, *oracle_pesq(ref_cut, out), frame_rate_comb(out),
                               frame_locked(out)])
        if i == 0 and args.plot:  # the --refine counts are left out of the figure: it would be too tall
            plot(args.plot, ref, {k: v for k, v in outputs.items() if k not in extra})
    bands = " | ".join(f"{lo / 1000:g}–{hi / 1000:g} kHz" for lo, hi in BANDS)
    print(f"\n{len(files)} clips from {args.data}; model {codec.name}. Magnitude error in dB (lower is better), "
          "PESQ-WB at 16 kHz\n")
    print(f"| vocoder | {bands} | PESQ-WB | PESQ, reference magnitude | PESQ, reference phase | 86 Hz comb "
          "| frame-locked share |")
    print("|---|" + "---:|" * (len(BANDS) + 5))
    for name, r in rows.items():
        m = np.mean(r, axis=0)
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in m[: len(BANDS)]) + " | " +
              " | ".join(f"{v:.2f}" for v in m[len(BANDS):-2]) + f" | {m[-2]:.1f} | {m[-1]:.3f} |")
    comb, locked = np.mean(ref_comb, axis=0)
    print(f"\nThe reference clips: 86 Hz comb {comb:.1f}, frame-locked share {locked:.3f}")


if __name__ == "__main__":
    main()
