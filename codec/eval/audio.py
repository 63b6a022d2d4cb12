"""Evaluation of an audio model (``strata eval audio``), docs/design.md §7 (evaluation protocol).

::

    clip @ 22 050 Hz ─┬─► compress(k) ─► stream ─► decompress_mel ─► mel_k ─┬─┤ default vocoder ├─► ŷ  k = 1…L
                      │                                                     ├─┤ the other network ├─► ŷ (two networks)
                      │                                                     └─┤ Griffin-Lim ├─► ŷ  (flag)
                      ├─► log-mel ─┬─┤ HiFi-GAN ├─► ŷ                     (the vocoder's upper bound)
                      │            ├─┤ HiFi-GAN, refine=0 ├─► ŷ          (the network alone)
                      │            ├─┤ Vocos, refine=0 | served ├─► ŷ    (when the model has one)
                      │            └─┤ Griffin-Lim, 32 it. ├─► ŷ
                      └─► Opus hard-cbr | vbr at 6, 8, 12 kbps and at the codec's own bitrates ─► ŷ

The ``codec`` rows use the model's default vocoder (``default_vocoder`` in the report); a model with
both networks also gets ``codec+hifigan`` or ``codec+vocos`` rows for the other one. HiFi-GAN runs the
generator, then ``refine`` mel-consistency iterations (:mod:`strata.vocoder.refine`; ``refine``, by
default the model's, is recorded in the report); the ``hifigan-raw`` row is the generator's own output.
Vocos runs alone (``vocos``) and as served, with its own iterations (``vocos-refined``; ``vocos_refine``
in the report).

On every clip of the test splits ``<data>/speech/test`` and ``<data>/environment/test``
(the training splits are never read), for every system and operating point:

- ``kbps``: the whole stream (header included; Opus: the whole Ogg file) × 8 / the clip's
  seconds, averaged over clips; ``kbps_pooled``: total bytes × 8 / total seconds.
- ``mel_rmse``: RMSE of the normalised log-mel (:func:`strata.eval.metrics_audio.log_mel_rmse`, the
  HQ-VAE Table 2 number) of the codec's decoded mel against the clip's, before any vocoder.
  Per-clip values averaged. Only the codec rows have it.
- ``mel_distance``: mean |Δ log-mel| between the clip and the decoded waveform; ``lsd``: the
  log-spectral distance (dB) between them. Every system.
- ``pesq`` (PESQ-WB) and ``stoi``: speech clips only, at 16 kHz. Skipped with a note when the
  ``pesq`` / ``pystoi`` package is missing; a clip PESQ cannot score is left out of the mean
  (``pesq_clips`` counts the scored ones).
- ``encode_s`` / ``decode_s``: total wall-clock seconds on CPU (onnxruntime's CPU provider);
  the codec's decode includes entropy decoding, ``g_s`` and the vocoder. ``encode_xrt`` /
  ``decode_xrt``: × real time, seconds of audio per second of processing. Opus times are
  those of the ``opusenc`` / ``opusdec`` processes (process start included).

Each point is reported for ``speech``, ``environment`` and ``all`` clips (``all`` has no PESQ
or STOI). Opus runs in both rate controls of :mod:`strata.eval.baselines_audio` (``hard-cbr``
reproduces the reference numbers of docs/design.md §7, ``vbr`` is the stronger baseline) at 6, 8 and 12 kbps,
and at the targets that a line through those three predicts to match the codec's mean bitrate
at each layer count (where that is within Opus's range).

Writes ``report.json``, ``pesq_kbps.png`` and ``mels.png`` to the output folder.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from strata.audio import SAMPLE_RATE, AudioCodec
from strata.bitstream import parse, truncate
from strata.entropy.prior import CodePrior
from strata.errors import BaselineError, BaselineUnavailableError, InputError
from strata.eval import baselines_audio
from strata.eval.metrics_audio import log_mel_rmse, log_spectral_distance, mel_distance, pesq_wb, stoi
from strata.frontend.audio import log_mel, read_audio
from strata.registry import Registry, write_manifest
from strata.runtime import choose_providers
from strata.vocoder.griffinlim import griffin_lim

SPLITS = ("speech", "environment")
ALL = "all"
AUDIO_SUFFIXES = (".flac", ".wav", ".ogg")
OPUS_TARGETS = (6.0, 8.0, 12.0)  # kbit/s: the docs/design.md §7 (evaluation protocol) reference points
OPUS_MODES = ("hard-cbr", "vbr")
GRIFFIN_LIM_ITERS = 32
MATCH_TOLERANCE_KBPS = 0.5  # a matched Opus target this close to one already run is not run again

# Systems (AudioPoint.system).
CODEC, CODEC_GL, HIFIGAN, GRIFFINLIM = "codec", "codec+griffinlim", "hifigan", "griffinlim"
HIFIGAN_RAW = "hifigan-raw"  # the generator alone (refine=0): what training alone achieved
VOCOS, VOCOS_REFINED = "vocos", "vocos-refined"  # the Vocos network alone, and with the default refinement
CODEC_HIFIGAN, CODEC_VOCOS = "codec+hifigan", "codec+vocos"  # the codec through the non-default network
TRUE_MEL_SYSTEMS = (HIFIGAN, HIFIGAN_RAW, VOCOS, VOCOS_REFINED, GRIFFINLIM)
CODEC_SYSTEMS = (CODEC, CODEC_GL, CODEC_HIFIGAN, CODEC_VOCOS)
TRUE_MEL = "true mel"

# docs/design.md §7: Opus hard-cbr on the whole speech test split, target → (kbps, PESQ-WB, STOI); drawn for context.
REFERENCE_OPUS = {6: (8.3, 1.91, 0.859), 8: (10.3, 2.85, 0.941), 12: (14.4, 3.69, 0.964)}


@dataclass
class AudioPoint:
    """One operating point of one system on one split: means (or totals) over its clips."""

    system: str  # "codec", "codec+griffinlim", "hifigan", "griffinlim", "opus-hard-cbr", "opus-vbr"
    label: str  # "k=3", "true mel", "6 kbps"
    split: str  # "speech", "environment" or "all"
    clips: int
    seconds: float  # total audio
    kbps: float | None  # mean over clips of stream bytes · 8 / seconds / 1000; None: no stream
    kbps_pooled: float | None  # total bytes · 8 / total seconds / 1000
    mel_rmse: float | None  # codec's decoded log-mel vs the clip's (HQ-VAE); None for waveform-only systems
    mel_distance: float  # mean |Δ log-mel| of the decoded waveform
    lsd: float  # log-spectral distance, dB
    pesq: float | None  # PESQ-WB, speech only
    pesq_clips: int
    stoi: float | None  # STOI, speech only
    stoi_clips: int
    encode_s: float | None  # total seconds; None where there is no encoder (true-mel vocoders)
    decode_s: float
    encode_xrt: float | None  # × real time: audio seconds / encode seconds
    decode_xrt: float | None
    target_kbps: float | None = None  # Opus: the bitrate asked of the encoder
    matched_layers: int | None = None  # Opus: the codec layer count whose bitrate this target matches


@dataclass
class LayerAccount:
    """Bit rate of one layer alone (kbit/s, mean over clips): raw, ideal under each prior, and coded."""

    layer: int
    context: str
    raw_kbps: float  # rows · columns · log2 K / seconds
    static_kbps: float | None  # cross-entropy under the static per-layer prior (None: the model ships none)
    prior_kbps: float  # cross-entropy under the shipped (conditional) prior
    coded_kbps: float  # the layer's chunk


@dataclass
class AudioReport:
    model: str
    weights_sha256: str
    vocoder_sha256: str
    layers: int
    data: str
    clips: dict[str, int]  # per split
    seconds: dict[str, float]  # per split, total audio
    command: str
    date: str  # UTC, ISO 8601
    machine: str
    threads: int
    refine: int  # HiFi-GAN's mel-consistency iterations in its codec and hifigan rows
    points: list[AudioPoint]
    entropy: list[LayerAccount]
    header_bytes: float  # mean over clips, full stream
    opus_backend: str | None
    notes: list[str] = field(default_factory=list)
    default_vocoder: str = "hifigan"  # the vocoder of the codec rows
    vocos_sha256: str | None = None  # the model's Vocos network, when it has one
    vocos_refine: int | None = None  # Vocos's iterations in its codec and vocos-refined rows

    def point(self, system: str, label: str, split: str = ALL) -> AudioPoint | None:
        return next((p for p in self.points if (p.system, p.label, p.split) == (system, label, split)), None)

    def series(self, system: str, split: str = ALL) -> list[AudioPoint]:
        """The points of one system on one split, in order of bitrate (codec: of layer count)."""
        pts = [p for p in self.points if p.system == system and p.split == split]
        return pts if system in CODEC_SYSTEMS else sorted(pts, key=lambda p: p.kbps or 0.0)

    def systems(self) -> list[str]:
        return list(dict.fromkeys(p.system for p in self.points))


@dataclass
class _Score:
    """One clip through one system."""

    split: str
    seconds: float
    bytes: int | None
    mel_rmse: float | None
    mel_distance: float
    lsd: float
    pesq: float | None
    stoi: float | None
    encode_s: float | None
    decode_s: float


@dataclass
class _Clip:
    split: str
    name: str
    samples: np.ndarray  # float32 [T] at 22 050 Hz
    mel: np.ndarray  # its log-mel [80, T // 256]

    @property
    def seconds(self) -> float:
        return self.samples.size / SAMPLE_RATE


class _SpeechMetrics:
    """PESQ-WB and STOI on speech; a missing package or an unscorable clip gives None and a note."""

    def __init__(self) -> None:
        self.fns: dict[str, Callable] = {"PESQ-WB": pesq_wb, "STOI": stoi}
        self.missing: dict[str, str] = {}
        self.failures: dict[str, list[str]] = defaultdict(list)

    def __call__(self, metric: str, clip: _Clip, decoded: np.ndarray, system: str) -> float | None:
        if clip.split != "speech" or metric in self.missing:
            return None
        try:
            return self.fns[metric](clip.samples, decoded, SAMPLE_RATE)
        except ModuleNotFoundError as e:
            self.missing[metric] = str(e)
        except InputError as e:
            self.failures[metric].append(f"{clip.name} ({system}): {e}")
        return None

    def notes(self) -> list[str]:
        out = [f"{m} skipped: {msg}" for m, msg in self.missing.items()]
        for m, fails in self.failures.items():
            out.append(
                f"{m} could not score {len(fails)} clip/system pair(s), left out of its means; first: {fails[0]}"
            )
        return out


def list_test_clips(data: Path, limit: int | None = None) -> dict[str, list[Path]]:
    """The sound files of ``<data>/<split>/test`` for each split, sorted by name; the first ``limit`` of each."""
    if limit is not None and limit < 1:
        raise InputError(f"limit must be a positive number of clips, got {limit}")
    if not Path(data).is_dir():
        raise FileNotFoundError(f"no audio data folder {data}")
    out = {}
    for split in SPLITS:
        folder = Path(data) / split / "test"
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES) if folder.is_dir() else []
        if not files:
            raise FileNotFoundError(f"no test clips ({', '.join(AUDIO_SUFFIXES)}) in {folder}")
        out[split] = files[:limit]
    return out


def _read_clip(split: str, path: Path) -> _Clip:
    try:
        audio = read_audio(path.read_bytes(), max_seconds=math.inf, rate=SAMPLE_RATE)
    except InputError as e:
        raise type(e)(f"{path}: {e}") from None
    x = audio.samples
    return _Clip(split, f"{split}/{path.name}", x, log_mel(x))


def _griffin_lim(mel: np.ndarray) -> np.ndarray:
    return griffin_lim(mel, n_iter=GRIFFIN_LIM_ITERS)


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    """``y`` cut or zero-padded to ``n`` samples (vocoders return whole hops)."""
    return y[:n] if y.size >= n else np.pad(y, (0, n - y.size))


def evaluate_audio(
    registry: Registry,
    data: Path,
    out: Path,
    model: str | None = None,
    limit: int | None = None,
    threads: int = 0,
    codec_griffinlim: bool = False,
    refine: int | None = None,
    command: str = "",
    log: Callable[[str], None] = print,
) -> AudioReport:
    """Evaluate an audio model and its baselines on the test clips; write the report and the plots to ``out``."""
    files = list_test_clips(Path(data), limit)
    codec = AudioCodec.load(registry, model, providers=choose_providers("cpu"), threads=threads, refine=refine,
                            vocos_refine=refine)
    static = CodePrior.load(registry.path(codec.entry, "prior_static")) if "prior_static" in codec.entry.files else None
    L = codec.layers
    clips = [_read_clip(split, p) for split in SPLITS for p in files[split]]
    codec.decompress(codec.compress(clips[0].samples))  # untimed warm-up: onnxruntime's first runs are slower
    default = codec.network(None)  # the codec rows' vocoder (None: Griffin-Lim, never a model default)
    other = None  # the model's second network, decoded in rows of its own
    if codec.vocos is not None:
        other = (CODEC_HIFIGAN, codec.vocoder) if codec.vocos is default else (CODEC_VOCOS, codec.vocos)
        codec.vocos(log_mel(clips[0].samples))
    true_mel = [(HIFIGAN, codec.vocoder), (HIFIGAN_RAW, lambda m: codec.vocoder(m, refine=0))]
    if codec.vocos is not None:
        true_mel += [(VOCOS, lambda m: codec.vocos(m, refine=0)),
                     (VOCOS_REFINED, codec.vocos)]
    true_mel.append((GRIFFINLIM, _griffin_lim))
    speech = _SpeechMetrics()
    scores: dict[tuple[str, str], list[_Score]] = defaultdict(list)
    header, accounts = [], []
    examples: dict[str, tuple[str, np.ndarray, dict[int, np.ndarray]]] = {}  # split → (clip, its mel, {k: mel_k})

    def score(
        clip: _Clip,
        y: np.ndarray,
        system: str,
        nbytes: int | None,
        enc: float | None,
        dec: float,
        mel: np.ndarray | None = None,
    ) -> _Score:
        return _Score(
            clip.split,
            clip.seconds,
            nbytes,
            None if mel is None else log_mel_rmse(clip.mel, mel),
            mel_distance(clip.mel, log_mel(y)),
            log_spectral_distance(clip.samples, y, SAMPLE_RATE),
            speech("PESQ-WB", clip, y, system),
            speech("STOI", clip, y, system),
            enc,
            dec,
        )

    for clip in clips:
        x, n = clip.samples, clip.samples.size
        full = codec.compress(x)
        header.append(len(full) - parse(full).header.payload_bytes)
        accounts.append(_layer_account(codec, static, full, clip.seconds))
        line = []
        keep = clip.split not in examples
        if keep:
            examples[clip.split] = (clip.name, clip.mel, {})
        for k in range(1, L + 1):
            t0 = time.perf_counter()
            stream = codec.compress(x, k)
            t1 = time.perf_counter()
            mel = codec.decompress_mel(stream)
            y = _fit(default(mel), n)
            t2 = time.perf_counter()
            if stream != truncate(full, k):
                raise RuntimeError(f"{clip.name}: compress(k={k}) differs from the truncated full stream")
            s = score(clip, y, CODEC, len(stream), t1 - t0, t2 - t1, mel)
            scores[CODEC, f"k={k}"].append(s)
            line.append(f"{8 * len(stream) / clip.seconds / 1000:.2f}/{s.mel_rmse:.3f}")
            if other is not None:
                t3 = time.perf_counter()
                mel_o = codec.decompress_mel(stream)
                y_o = _fit(other[1](mel_o), n)
                t4 = time.perf_counter()
                scores[other[0], f"k={k}"].append(score(clip, y_o, other[0], len(stream), t1 - t0, t4 - t3, mel_o))
            if codec_griffinlim:
                t3 = time.perf_counter()
                mel_gl = codec.decompress_mel(stream)
                y_gl = _fit(_griffin_lim(mel_gl), n)
                t4 = time.perf_counter()
                scores[CODEC_GL, f"k={k}"].append(score(clip, y_gl, CODEC_GL, len(stream), t1 - t0, t4 - t3, mel_gl))
            if keep and k in (1, L):
                examples[clip.split][2][k] = mel
        for system, vocode in true_mel:
            t0 = time.perf_counter()
            y = _fit(vocode(clip.mel), n)
            scores[system, TRUE_MEL].append(score(clip, y, system, None, None, time.perf_counter() - t0))
        log(f"  {clip.name} ({clip.seconds:.1f} s) kbps/mel RMSE: " + " ".join(line))

    opus_notes: list[str] = []
    targets: dict[tuple[str, str], tuple[float, int | None]] = {}
    backend = _opus(clips, scores, targets, score, opus_notes, log)
    points = _aggregate(scores, targets)
    report = AudioReport(
        model=codec.name,
        weights_sha256=codec.entry.weights_sha256,
        vocoder_sha256=codec.entry.files["vocoder"].sha256,
        layers=L,
        data=str(data),
        clips={s: len(files[s]) for s in SPLITS},
        seconds={s: float(sum(c.seconds for c in clips if c.split == s)) for s in SPLITS},
        command=command,
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        machine=f"{platform.machine()}, {os.cpu_count()} cores, onnxruntime {codec.provider} provider",
        threads=threads,
        refine=codec.vocoder.refine,
        vocos_refine=codec.vocos.refine if codec.vocos is not None else None,
        points=points,
        entropy=[
            LayerAccount(i + 1, str(codec.prior.kinds[i]), *(None if math.isnan(v) else float(v) for v in row))
            for i, row in enumerate(np.mean(accounts, axis=0))
        ],
        header_bytes=float(np.mean(header)),
        opus_backend=backend,
        notes=speech.notes() + opus_notes,
        default_vocoder=codec.default_vocoder.value,
        vocos_sha256=codec.entry.files["vocos"].sha256 if "vocos" in codec.entry.files else None,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    plot_pesq_kbps(report, out / "pesq_kbps.png")
    plot_mels(report, examples, out / "mels.png")
    return report


def _layer_account(codec: AudioCodec, static: CodePrior | None, full: bytes, seconds: float) -> np.ndarray:
    """``[L, 4]`` kbit/s of each layer of one clip: raw log2 K, static prior, conditional prior, coded."""
    codes = codec.decompress_codes(full).codes
    cond = codec.prior.cross_entropy_bits(codes)
    stat = static.cross_entropy_bits(codes) if static else [math.nan] * codec.layers
    chunks = parse(full).header.chunks
    raw = [codes[0].size * math.log2(k) for k in codec.entry.codebook_sizes]
    return np.array([(raw[i], stat[i], cond[i], 8 * chunks[i][0]) for i in range(codec.layers)]) / seconds / 1000


def _opus(
    clips: list[_Clip], scores: dict, targets: dict, score: Callable, notes: list[str], log: Callable
) -> str | None:
    """Opus at the fixed targets, then at the targets matching the codec's bitrates; returns the backend used."""
    try:
        backend = baselines_audio.opus_backend()
    except BaselineUnavailableError as e:
        notes.append(f"Opus skipped: {e}")
        return None
    codec_kbps = {
        int(lab[2:]): _mean([8 * s.bytes / s.seconds / 1000 for s in ss])
        for (system, lab), ss in scores.items()
        if system == CODEC
    }

    def run(mode: str, target: float, matched: int | None = None) -> float | None:
        label = f"{target:g} kbps" + (f" (≈ k={matched})" if matched else "")
        rows = []
        try:
            for clip in clips:
                r = baselines_audio.opus_roundtrip(clip.samples, SAMPLE_RATE, target, mode=mode, backend=backend)
                rows.append(score(clip, r.samples, f"opus {mode} {target:g}", r.bytes, r.encode_s, r.decode_s))
        except BaselineError as e:
            notes.append(f"Opus {mode} at {target:g} kbps left out: {e}")
            return None
        scores[f"opus-{mode}", label] = rows
        targets[f"opus-{mode}", label] = (target, matched)
        kbps = _mean([8 * s.bytes / s.seconds / 1000 for s in rows])
        log(f"  Opus {mode} {label}: {kbps:.2f} kbps")
        return kbps

    for mode in OPUS_MODES:
        measured = {t: kbps for t in OPUS_TARGETS if (kbps := run(mode, t)) is not None}
        matched, below = matched_opus_targets(codec_kbps, measured)
        for k, target in matched:
            run(mode, target, k)
        if below and measured:
            low = min(measured)
            notes.append(
                f"Opus {mode}: codec k={', '.join(map(str, below))} below Opus's lowest rate "
                f"({low:g} kbps target → {measured[low]:.2f} kbps), not matched"
            )
    return backend


def matched_opus_targets(
    codec_kbps: dict[int, float], measured: dict[float, float], tolerance: float = MATCH_TOLERANCE_KBPS
) -> tuple[list[tuple[int, float]], list[int]]:
    """Opus targets expected to give the codec's bitrate at each layer count.

    A least-squares line ``measured = a + b · target`` through the Opus runs (container
    overhead is about a constant rate) is inverted at each codec bitrate. Returns
    ``([(k, target), …], [k below Opus's range, …])``: targets are rounded to 0.1 kbit/s,
    within opusenc's range, and at least ``tolerance`` from every target already run or chosen.
    """
    if len(measured) < 2:
        return [], []
    t, m = np.array(list(measured)), np.array(list(measured.values()))
    b, a = np.polyfit(t, m, 1)
    if not b > 0:
        return [], []
    chosen, below, taken = [], [], list(measured)
    for k, kbps in sorted(codec_kbps.items()):
        target = round(float((kbps - a) / b), 1)
        if target < baselines_audio.MIN_KBPS:
            below.append(k)
        elif target <= baselines_audio.MAX_KBPS and all(abs(target - x) >= tolerance for x in taken):
            chosen.append((k, target))
            taken.append(target)
    return chosen, below


def _mean(values: list) -> float | None:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(vals)) if vals else None


def _aggregate(
    scores: dict[tuple[str, str], list[_Score]], targets: dict[tuple[str, str], tuple[float, int | None]]
) -> list[AudioPoint]:
    points = []
    for (system, label), rows in scores.items():
        target, matched = targets.get((system, label), (None, None))
        for split in (*SPLITS, ALL):
            sel = [r for r in rows if split in (ALL, r.split)]
            if not sel:
                continue
            secs = sum(r.seconds for r in sel)
            has_bytes = sel[0].bytes is not None
            enc = sum(r.encode_s for r in sel) if sel[0].encode_s is not None else None
            dec = sum(r.decode_s for r in sel)
            speech_only = split != ALL
            pesq_vals = [r.pesq for r in sel if r.pesq is not None] if speech_only else []
            stoi_vals = [r.stoi for r in sel if r.stoi is not None] if speech_only else []
            points.append(
                AudioPoint(
                    system=system,
                    label=label,
                    split=split,
                    clips=len(sel),
                    seconds=secs,
                    kbps=_mean([8 * r.bytes / r.seconds / 1000 for r in sel]) if has_bytes else None,
                    kbps_pooled=8 * sum(r.bytes for r in sel) / secs / 1000 if has_bytes else None,
                    mel_rmse=_mean([r.mel_rmse for r in sel]),
                    mel_distance=_mean([r.mel_distance for r in sel]),
                    lsd=_mean([r.lsd for r in sel]),
                    pesq=_mean(pesq_vals),
                    pesq_clips=len(pesq_vals),
                    stoi=_mean(stoi_vals),
                    stoi_clips=len(stoi_vals),
                    encode_s=enc,
                    decode_s=dec,
                    encode_xrt=secs / enc if enc else None,
                    decode_xrt=secs / dec if dec else None,
                    target_kbps=target,
                    matched_layers=matched,
                )
            )
    return points


def record_in_manifest(registry: Registry, report: AudioReport) -> Path:
    """Store the measured bitrates in the model's manifest entry (sha256 pins untouched).

    ``bits_per_layer``: coded bits per second of each layer alone (mean over clips; an image
    model's are bits per image). ``extra["kbps_per_layer"]``: the whole stream's mean kbit/s
    with 1…L layers, header included. ``bpp_per_layer`` stays empty (images only).
    """
    entry = registry.entry(report.model)
    if entry.weights_sha256 != report.weights_sha256:
        raise InputError(
            f"the report measured weights {report.weights_sha256[:16]}… of {report.model!r}; "
            f"the manifest holds {entry.weights_sha256[:16]}…"
        )
    entries = dict(registry.entries)
    total = report.clips["speech"] + report.clips["environment"]
    entries[entry.name] = replace(
        entry,
        bits_per_layer=tuple(round(1000 * e.coded_kbps, 1) for e in report.entropy),
        extra={
            **entry.extra,
            "bits_per_layer_unit": "bit/s",
            "kbps_per_layer": [round(p.kbps, 4) for p in report.series(CODEC)],
            "measured_on": f"{total} test clips of {Path(report.data).name} "
            f"({report.clips['speech']} speech, {report.clips['environment']} environment)",
        },
    )
    return write_manifest(registry.root, entries, registry.defaults)


# ------------------------------------------------------------------------------------------ plots and table

_STYLE = {CODEC: "o-", CODEC_GL: "o:", CODEC_HIFIGAN: "d-", CODEC_VOCOS: "d-", "opus-hard-cbr": "s--",
          "opus-vbr": "^--"}
_COLOR = {CODEC: "C0", CODEC_GL: "C1", CODEC_HIFIGAN: "C6", CODEC_VOCOS: "C6", "opus-hard-cbr": "C2", "opus-vbr": "C9",
          HIFIGAN: "C3", HIFIGAN_RAW: "C5", VOCOS: "C8", VOCOS_REFINED: "C7", GRIFFINLIM: "C4"}
_LINE = {HIFIGAN: "-.", HIFIGAN_RAW: (0, (1, 3)), VOCOS: "--", VOCOS_REFINED: (0, (5, 1)),
         GRIFFINLIM: ":"}  # true-mel systems: horizontal lines


def _name(system: str, default_vocoder: str = "hifigan") -> str:
    """How ``system`` is labelled in tables and plots (the codec rows name the model's default vocoder)."""
    return {
        CODEC: f"codec ({ {'hifigan': 'HiFi-GAN', 'vocos': 'Vocos'}.get(default_vocoder, default_vocoder)})",
        CODEC_GL: "codec (Griffin-Lim)",
        CODEC_HIFIGAN: "codec (HiFi-GAN)",
        CODEC_VOCOS: "codec (Vocos)",
        HIFIGAN: "HiFi-GAN on the true mel",
        HIFIGAN_RAW: "HiFi-GAN network alone (refine=0) on the true mel",
        VOCOS: "Vocos network alone on the true mel",
        VOCOS_REFINED: "Vocos as served (refined) on the true mel",
        GRIFFINLIM: f"Griffin-Lim ({GRIFFIN_LIM_ITERS} it.) on the true mel",
        "opus-hard-cbr": "Opus hard-CBR",
        "opus-vbr": "Opus VBR",
    }.get(system, system)


def plot_pesq_kbps(report: AudioReport, path: Path) -> None:
    """PESQ-WB and STOI (speech) and mel distance (all clips) against kbps, with the true-mel vocoders as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    panels = (
        ("pesq", "speech", "PESQ-WB (speech)"),
        ("stoi", "speech", "STOI (speech)"),
        ("mel_distance", ALL, "mel distance (all clips, lower is better)"),
    )
    for ax, (metric, split, title) in zip(axes, panels, strict=True):
        drawn = False
        for system in report.systems():
            pts = [p for p in report.series(system, split) if getattr(p, metric) is not None]
            if not pts:
                continue
            drawn = True
            if system in TRUE_MEL_SYSTEMS:
                ax.axhline(
                    getattr(pts[0], metric),
                    ls=_LINE[system],
                    color=_COLOR[system],
                    label=_name(system, report.default_vocoder),
                )
                continue
            xs, ys = [p.kbps for p in pts], [getattr(p, metric) for p in pts]
            ax.plot(xs, ys, _STYLE.get(system, ".-"), color=_COLOR.get(system),
                    label=_name(system, report.default_vocoder), ms=4)
            if system == CODEC:
                for p, xv, yv in zip(pts, xs, ys, strict=True):
                    ax.annotate(p.label[2:], (xv, yv), textcoords="offset points", xytext=(3, 3), fontsize=7)
        if metric in ("pesq", "stoi") and Path(report.data).name == "audio":
            i = 1 if metric == "pesq" else 2
            ax.plot(
                [v[0] for v in REFERENCE_OPUS.values()],
                [v[i] for v in REFERENCE_OPUS.values()],
                "x",
                color="gray",
                label="Opus hard-CBR, docs/design.md §7 (evaluation protocol) (40 clips)",
            )
        if not drawn:
            note = next((n for n in report.notes if n.startswith(title.split()[0])), "no values")
            ax.text(0.5, 0.5, note[:80], ha="center", va="center", transform=ax.transAxes, fontsize=8, wrap=True)
        ax.set_xlabel("kbit/s (whole stream)")
        ax.set_title(title, fontsize=10)
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=7, framealpha=0.8)
    fig.suptitle(
        f"{report.model} on {report.clips['speech']} speech + {report.clips['environment']} "
        f"environment test clips of {report.data}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_mels(report: AudioReport, examples: dict, path: Path) -> None:
    """Original vs decoded log-mel for the first clip of each split, at k = 1 and k = L."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted({1, report.layers})
    fig, axes = plt.subplots(
        len(SPLITS), 1 + len(ks), figsize=(4.5 * (1 + len(ks)), 3.2 * len(SPLITS)), squeeze=False, layout="constrained"
    )
    for row, split in zip(axes, SPLITS, strict=True):
        name, ref, decoded = examples[split]
        vmin, vmax = float(np.log(1e-5)), float(ref.max())
        for ax, (title, m) in zip(row, [("original", ref)] + [(f"k={k}", decoded[k]) for k in ks], strict=True):
            im = ax.imshow(m, origin="lower", aspect="auto", vmin=vmin, vmax=vmax, cmap="magma")
            rmse = "" if m is ref else f", mel RMSE {log_mel_rmse(ref, m):.3f}"
            ax.set_title(f"{name.split('/', 1)[1][:40]}: {title}{rmse}", fontsize=8)
            ax.set_xlabel("frame (11.6 ms)")
            ax.set_ylabel("mel band")
        fig.colorbar(im, ax=row.tolist(), fraction=0.02, label="log mel")
    fig.suptitle(f"{report.model}: log-mel of the input and of the decoded mel")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _f(v: float | None, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def format_report(r: AudioReport) -> str:
    """Markdown: every system on one table (per-split kbps and mel RMSE), then the per-layer bit account."""
    n_s, n_e = r.clips["speech"], r.clips["environment"]
    lines = [
        f"model {r.model} (weights {r.weights_sha256[:12]}…) on {n_s} speech + {n_e} environment test clips "
        f"({r.seconds['speech']:.0f} s + {r.seconds['environment']:.0f} s, {r.data}); CPU, onnxruntime threads "
        f"{r.threads or 'all'}; codec rows through {r.default_vocoder}; HiFi-GAN with {r.refine} mel-consistency "
        f"iterations{'' if r.vocos_refine is None else f', Vocos with {r.vocos_refine}'}",
        "",
        "| system | kbps speech | kbps env. | mel RMSE speech | mel RMSE env. | mel dist. | LSD (dB) | PESQ-WB | STOI "
        "| encode × RT | decode × RT |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for system in r.systems():
        for p in r.series(system, ALL):
            s, e = r.point(system, p.label, "speech"), r.point(system, p.label, "environment")
            name = _name(system, r.default_vocoder) + ("" if system in TRUE_MEL_SYSTEMS else f" {p.label}")
            lines.append(
                f"| {name} | {_f(s.kbps, '.2f')} | {_f(e.kbps, '.2f')} | {_f(s.mel_rmse, '.3f')} | "
                f"{_f(e.mel_rmse, '.3f')} | {p.mel_distance:.3f} | {p.lsd:.2f} | {_f(s.pesq, '.2f')} | "
                f"{_f(s.stoi, '.3f')} | {_f(p.encode_xrt, '.1f')} | {_f(p.decode_xrt, '.1f')} |"
            )
    lines += [
        "",
        "kbps: whole stream (header / Ogg container included) × 8 / seconds, mean over clips; mel RMSE: the "
        "decoded log-mel (HQ-VAE Table 2), mean over clips; mel distance and LSD over all clips, on the decoded "
        "waveform; PESQ-WB and STOI on speech at 16 kHz; × RT: seconds of audio per second (codec decode "
        "includes the vocoder; Opus: opusenc / opusdec processes).",
        "docs/design.md §7 (evaluation protocol) (Opus hard-CBR, whole speech split): "
        + "; ".join(f"{t} → {v[0]} kbps {v[1]:.2f} / {v[2]:.3f}" for t, v in REFERENCE_OPUS.items()),
        "",
        "| layer | context | raw log2 K (kbps) | static prior | conditional prior | coded | stream 1..k | pooled |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for e, p in zip(r.entropy, r.series(CODEC), strict=True):
        lines.append(
            f"| {e.layer} | {e.context} | {e.raw_kbps:.3f} | {_f(e.static_kbps, '.3f')} | {e.prior_kbps:.3f} | "
            f"{e.coded_kbps:.3f} | {p.kbps:.3f} | {p.kbps_pooled:.3f} |"
        )
    lines += [
        "",
        "Per layer alone (kbit/s, mean over all clips): raw log2 K, ideal under the static and the conditional "
        "prior, coded; then the whole stream with layers 1..k, mean over clips and pooled (total bytes / total "
        f"seconds). Header: {r.header_bytes:.1f} bytes per stream. Opus backend: {r.opus_backend or 'none'}.",
    ]
    lines += [f"note: {n}" for n in r.notes]
    return "\n".join(lines)


__all__ = [
    "AudioPoint",
    "AudioReport",
    "LayerAccount",
    "evaluate_audio",
    "format_report",
    "list_test_clips",
    "matched_opus_targets",
    "plot_mels",
    "plot_pesq_kbps",
    "record_in_manifest",
]
