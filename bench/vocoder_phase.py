"""How far a vocoder's STFT phase is from the reference's: instantaneous phase, group delay and
instantaneous frequency (``strata.train.nets.hifigan_loss.phase_distances``).

For each clip (the true log-mel of a test sound, no codec) the shipped HiFi-GAN as served (network
and refinement), the network alone and Griffin-Lim (numpy, 32 iterations) resynthesise the
waveform; ``--refine K ...`` adds other refinement counts, ``--checkpoint`` training checkpoints. Each
distance is ``Σ |Y|·(1 − cos Δ) / Σ |Y|`` at n_fft 1024, hop 256 (0: the reference's phase, about 1:
an unrelated one), where ``Δ`` is the difference of the two phases, of their differences between
neighbouring bins (group delay) or of their differences between neighbouring frames (instantaneous
frequency). The *phase loss* column is what ``--phase-weight`` trains: the mean of the last two
over 512/128 and 1024/256. Two rows calibrate the scale: the reference delayed by 3 samples (what a
generator cannot be asked to match) and white noise at the reference's level. Prints a markdown
table (means over clips) with PESQ-WB beside it, then the instantaneous-frequency distance by band.
``--pitch`` adds a table of periodicity from ``librosa.pyin`` (60–400 Hz, frame 1024, hop 256):
the share of the reference's voiced frames that are voiced in the output too (*voiced recall*), the
share of its unvoiced frames that are not (*false voicing*), and the median pitch error in cents
over frames voiced in both, each pooled over all clips (slow: a few seconds per clip and signal).

    python bench/vocoder_phase.py --limit 8
    python bench/vocoder_phase.py --limit 8 --checkpoint runs/vocoder/best.pt --pitch
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from strata.audio import SAMPLE_RATE, AudioCodec
from strata.eval.metrics_audio import pesq_wb
from strata.frontend.audio import list_audio, log_mel, read_audio_file
from strata.registry import Registry
from strata.train.nets.hifigan_loss import phase_distances, phase_loss
from strata.vocoder.griffinlim import griffin_lim
from vocoder_bands import checkpoint_vocoder, served_vocoders

BANDS = ((0, 250), (250, 500), (500, 1000), (1000, 2000), (2000, 4000), (4000, 8000))  # Hz


def if_by_band(ref: np.ndarray, out: np.ndarray) -> list[float]:
    """The instantaneous-frequency distance (1024 / 256) within each of :data:`BANDS`."""
    window = torch.hann_window(1024)

    def frame_steps(x: np.ndarray) -> torch.Tensor:  # X[t] · conj(X[t − 1]): the phase turned in one hop
        s = torch.stft(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), 1024, 256, 1024, window,
                       return_complex=True)
        return s[:, 1:] * s[:, :-1].conj()

    a, a_hat = frame_steps(ref), frame_steps(out)
    w = a.abs().sqrt()  # the geometric mean of the two frames' magnitudes
    cos = (a_hat * a.conj()).real / (a_hat.abs() * a.abs() + 1e-30)
    d = (w * (1 - cos)).numpy()
    w = w.numpy()
    freqs = np.fft.rfftfreq(1024, 1 / SAMPLE_RATE)
    rows = [(freqs >= lo) & (freqs < hi) for lo, hi in BANDS]
    return [float(d[r].sum() / max(w[r].sum(), 1e-30)) for r in rows]


def pitch_track(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(f0 in Hz, voiced flags)`` per 256-sample hop (``librosa.pyin``, 60–400 Hz)."""
    import librosa

    f0, voiced, _ = librosa.pyin(x, fmin=60, fmax=400, sr=SAMPLE_RATE, frame_length=1024, hop_length=256)
    return f0, voiced


def distances(ref: np.ndarray, out: np.ndarray) -> list[float]:
    """``[instantaneous phase, group delay, instantaneous frequency, phase loss]`` of ``out`` against ``ref``."""
    y, y_hat = torch.from_numpy(ref)[None], torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))[None]
    d = phase_distances(y_hat, y, 1024, 256, 1024)
    return [float(d.instantaneous_phase), float(d.group_delay), float(d.instantaneous_frequency),
            float(phase_loss(y_hat, y))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/audio/speech/test")
    p.add_argument("--limit", type=int, default=8)
    p.add_argument("--model")
    p.add_argument("--refine", type=int, nargs="*", default=[],
                   help="also score the served HiFi-GAN with these numbers of refinement iterations")
    p.add_argument("--checkpoint", type=Path, nargs="*", default=[],
                   help="also score these generator checkpoints (best.pt, last.pt, vocoder.pt)")
    p.add_argument("--pitch", action="store_true", help="add the periodicity table (librosa.pyin; slow)")
    args = p.parse_args()
    torch.set_num_threads(1)
    codec = AudioCodec.load(Registry(), args.model)
    rng = np.random.default_rng(0)
    vocoders = served_vocoders(codec.vocoder, args.refine)
    vocoders["Griffin-Lim (32 it.)"] = griffin_lim
    for path in args.checkpoint:
        name, vocode = checkpoint_vocoder(path)
        vocoders[name] = vocode
    files = list_audio(Path(args.data))[: args.limit]
    if not files:
        raise SystemExit(f"no sound files in {args.data}")
    names = (*vocoders, "reference, 3 samples late", "white noise at the reference's level")
    rows: dict[str, list[list[float]]] = {name: [] for name in names}
    bands: dict[str, list[list[float]]] = {name: [] for name in names}
    pitch: dict[str, list[np.ndarray]] = {name: [] for name in vocoders}  # [recalled, voiced, false, unvoiced]
    cents: dict[str, list[np.ndarray]] = {name: [] for name in vocoders}
    for f in files:
        ref = read_audio_file(f)
        mel = log_mel(ref)
        outputs = {name: vocode(mel)[: len(ref)] for name, vocode in vocoders.items()}
        outputs["reference, 3 samples late"] = np.concatenate([np.zeros(3, np.float32), ref[:-3]])
        outputs[names[-1]] = (rng.standard_normal(len(ref)) * ref.std()).astype(np.float32)
        for name, out in outputs.items():
            ref_cut = ref[: len(out)]
            rows[name].append([*distances(ref_cut, out), pesq_wb(ref_cut, out, SAMPLE_RATE)])
            bands[name].append(if_by_band(ref_cut, out))
        if args.pitch:
            f0_ref, voiced_ref = pitch_track(ref)
            for name in vocoders:
                f0, voiced = pitch_track(outputs[name])
                n = min(len(f0), len(f0_ref))
                v, vr = voiced[:n], voiced_ref[:n]
                pitch[name].append(np.array([(v & vr).sum(), vr.sum(), (v & ~vr).sum(), (~vr).sum()]))
                cents[name].append(1200 * np.abs(np.log2(f0[:n][v & vr] / f0_ref[:n][v & vr])))
    print(f"\n{len(files)} clips from {args.data}; model {codec.name}. Phase distances at 1024 / 256 "
          "(0: the reference's phase, about 1: unrelated), PESQ-WB at 16 kHz\n")
    print("| signal | instantaneous phase | group delay | instantaneous frequency | phase loss | PESQ-WB |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        m = np.mean(r, axis=0)
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in m[:4]) + f" | {m[4]:.2f} |")
    print("\nInstantaneous-frequency distance by band\n")
    print("| signal | " + " | ".join(f"{lo / 1000:g}–{hi / 1000:g} kHz" for lo, hi in BANDS) + " |")
    print("|---|" + "---:|" * len(BANDS))
    for name, r in bands.items():
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in np.mean(r, axis=0)) + " |")
    if args.pitch:
        print("\nPeriodicity (librosa.pyin), pooled over clips\n")
        print("| signal | voiced recall | false voicing | median pitch error (cents) | frames voiced in both |")
        print("|---|---:|---:|---:|---:|")
        for name in vocoders:
            recalled, voiced, false, unvoiced = np.sum(pitch[name], axis=0)
            both = np.concatenate(cents[name])
            median = f"{np.median(both):.0f}" if len(both) else "n/a"
            recall, false_rate = recalled / max(voiced, 1), false / max(unvoiced, 1)
            print(f"| {name} | {recall:.3f} | {false_rate:.3f} | {median} | {len(both)} |")


if __name__ == "__main__":
    main()
