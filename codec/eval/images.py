"""Rate-distortion evaluation of an image model (``strata eval images``), docs/design.md §7 (evaluation protocol).

On every image of a folder (the 24 Kodak images for docs/results.md), for every layer
count k = 1…L: bpp of the whole stream (header included), PSNR on 8-bit RGB,
MS-SSIM on RGB, compress and decompress seconds. Pillow JPEG, WebP and AVIF quality
sweeps and JPEG 2000 rate sweeps are measured in the same run (AVIF and JPEG 2000 where
the Pillow build has them); the summaries are the BD-rate and BD-PSNR against each,
the PSNR margin over JPEG at each layer count (JPEG interpolated in log-bpp),
and the entropy-coding account: raw log2 K, static prior, conditional prior
(cross-entropy) and actual coded bits per layer.

Writes ``report.json`` and ``rd.png`` to the output folder.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from strata.bitstream import parse, truncate
from strata.entropy.prior import CodePrior
from strata.errors import InputError
from strata.eval import baselines
from strata.eval.metrics import bd_psnr, bd_rate, interp_psnr_at, ms_ssim, psnr
from strata.frontend.image import list_images, read_image
from strata.image import ImageCodec
from strata.registry import Registry


@dataclass
class RDPoint:
    """Mean over images of one operating point."""

    label: str  # "k=3", "q=50"
    bpp: float
    psnr: float
    ms_ssim: float
    encode_s: float
    decode_s: float


@dataclass
class EntropyAccount:
    """Bits per image for one layer, averaged over images."""

    layer: int
    context: str
    raw_bits: float  # h·w·log2 K
    static_bits: float  # cross-entropy under the static per-layer prior
    prior_bits: float  # cross-entropy under the shipped (conditional) table prior
    coded_bits: float  # actual chunk size × 8
    network_bits: float = math.nan  # cross-entropy under the model's context networks (NaN: none for this layer)


@dataclass
class ImageReport:
    model: str
    images: int
    data: str
    codec: list[RDPoint]
    jpeg: list[RDPoint]
    webp: list[RDPoint]
    bd_rate_vs_jpeg: float | None
    bd_rate_vs_webp: float | None
    bd_psnr_vs_jpeg: float | None
    bd_psnr_vs_webp: float | None
    margin_over_jpeg_db: list[float | None]  # per layer count; None where JPEG does not reach that bpp
    entropy: list[EntropyAccount]
    header_bytes: float
    threads: int
    extra: dict = field(default_factory=dict)
    avif: list[RDPoint] = field(default_factory=list)  # Pillow/libavif, speed 6 (empty without AVIF support)
    jpeg2000: list[RDPoint] = field(default_factory=list)  # Pillow/OpenJPEG at target rates
    bd_rate_vs_avif: float | None = None
    bd_rate_vs_jpeg2000: float | None = None
    bd_psnr_vs_avif: float | None = None
    bd_psnr_vs_jpeg2000: float | None = None


def _mean_points(rows: list[list[tuple]], labels: list[str]) -> list[RDPoint]:
    arr = np.array(rows, dtype=np.float64)  # [images, points, 5]
    m = arr.mean(0)
    return [RDPoint(lab, *map(float, m[i])) for i, lab in enumerate(labels)]


def evaluate_images(
    registry: Registry,
    data: Path,
    out: Path,
    model: str | None = None,
    limit: int | None = None,
    threads: int = 0,
) -> ImageReport:
    if limit is not None and limit < 1:
        raise InputError(f"limit must be a positive number of images, got {limit}")
    codec = ImageCodec.load(registry, model, threads=threads)
    static = _static_prior(registry, codec)
    files = list_images(data)[:limit]
    L = codec.layers
    codec_rows, jpeg_rows, webp_rows, ent_rows, header = [], [], [], [], []
    anchors = _anchors()
    anchor_rows: dict[str, list] = {name: [] for name in anchors}
    for path in files:
        image = read_image(path.read_bytes())
        pixels = image.shape[0] * image.shape[1]
        rows = []
        full = codec.compress(image)
        header.append(len(full) - parse(full).header.payload_bytes)
        for k in range(1, L + 1):
            t0 = time.perf_counter()
            stream = codec.compress(image, k)
            t1 = time.perf_counter()
            decoded = codec.decompress(stream)
            t2 = time.perf_counter()
            if stream != truncate(full, k):
                raise RuntimeError(f"{path.name}: compress(k={k}) differs from the truncated full stream")
            rows.append((8 * len(stream) / pixels, psnr(image, decoded), ms_ssim(image, decoded), t1 - t0, t2 - t1))
        codec_rows.append(rows)
        codes = codec.decompress_codes(full).codes
        t = codec.quantizer.top_layers  # two-scale models: those layers are coded on a grid 2× coarser
        cond = codec.prior.cross_entropy_bits(codes, t)
        stat = static.cross_entropy_bits(codes, t) if static else [math.nan] * L
        chunks = parse(full).header.chunks
        grids = [codes[i, ::2, ::2].size if i < t else codes[i].size for i in range(L)]
        net = codec.context.cross_entropy_bits(codes) if codec.context is not None else [math.nan] * L
        ent_rows.append([(grids[i] * math.log2(codec.entry.codebook_sizes[i]), stat[i], cond[i], 8 * chunks[i][0],
                          net[i]) for i in range(L)])
        for fn, qualities, sink in ((baselines.jpeg, baselines.JPEG_QUALITIES, jpeg_rows),
                                    (baselines.webp, baselines.WEBP_QUALITIES, webp_rows),
                                    *((fn, settings, anchor_rows[name]) for name, (fn, settings) in anchors.items())):
            pts = [fn(image, q) for q in qualities]
            sink.append([(p.bpp, psnr(image, p.decoded), ms_ssim(image, p.decoded), p.encode_s, p.decode_s)
                         for p in pts])
        print(f"  {path.name}: " + " ".join(f"{r[0]:.3f}/{r[1]:.2f}" for r in rows), flush=True)

    cpts = _mean_points(codec_rows, [f"k={k}" for k in range(1, L + 1)])
    jpts = _mean_points(jpeg_rows, [f"q={q}" for q in baselines.JPEG_QUALITIES])
    wpts = _mean_points(webp_rows, [f"q={q}" for q in baselines.WEBP_QUALITIES])
    more = {name: _mean_points(anchor_rows[name], [f"{'bpp' if name == 'jpeg2000' else 'q'}={q}" for q in settings])
            for name, (_, settings) in anchors.items()}
    apts, j2pts = more.get("avif", []), more.get("jpeg2000", [])
    ent = np.array(ent_rows).mean(0)
    kinds = codec.prior.kinds
    report = ImageReport(
        model=codec.name,
        images=len(files),
        data=str(data),
        codec=cpts,
        jpeg=jpts,
        webp=wpts,
        bd_rate_vs_jpeg=_safe(bd_rate, jpts, cpts),
        bd_rate_vs_webp=_safe(bd_rate, wpts, cpts),
        bd_psnr_vs_jpeg=_safe(bd_psnr, jpts, cpts),
        bd_psnr_vs_webp=_safe(bd_psnr, wpts, cpts),
        margin_over_jpeg_db=[_margin(p, jpts) for p in cpts],
        avif=apts,
        jpeg2000=j2pts,
        bd_rate_vs_avif=_safe(bd_rate, apts, cpts) if apts else None,
        bd_rate_vs_jpeg2000=_safe(bd_rate, j2pts, cpts) if j2pts else None,
        bd_psnr_vs_avif=_safe(bd_psnr, apts, cpts) if apts else None,
        bd_psnr_vs_jpeg2000=_safe(bd_psnr, j2pts, cpts) if j2pts else None,
        entropy=[EntropyAccount(i + 1, str(kinds[i]) + ("+network" if codec.context is not None and
                                                        codec.context.net(i) is not None else ""), *map(float, ent[i]))
                 for i in range(L)],
        header_bytes=float(np.mean(header)),
        threads=threads,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    plot_rd(report, out / "rd.png")
    return report


def record_in_manifest(registry: Registry, report: ImageReport) -> Path:
    """Store the measured mean coded bits per layer and bpp per layer count in the model's manifest entry."""
    from dataclasses import replace

    from strata.registry import write_manifest

    entry = registry.entry(report.model)
    entries = dict(registry.entries)
    entries[entry.name] = replace(
        entry,
        bits_per_layer=tuple(round(e.coded_bits, 1) for e in report.entropy),
        bpp_per_layer=tuple(round(p.bpp, 5) for p in report.codec),
        extra={**entry.extra, "measured_on": f"{report.images} images of {Path(report.data).name}"},
    )
    return write_manifest(registry.root, entries, registry.defaults)


def _anchors() -> dict[str, tuple]:
    """AVIF and JPEG 2000 (function, settings) where this Pillow build has them: JPEG and WebP always run."""
    from PIL import features

    out = {}
    if features.check("avif"):
        out["avif"] = (baselines.avif, baselines.AVIF_QUALITIES)
    if features.check("jpg_2000"):
        out["jpeg2000"] = (baselines.jpeg2000, baselines.JPEG2000_BPP)
    return out


def _static_prior(registry: Registry, codec: ImageCodec) -> CodePrior | None:
    if "prior_static" not in codec.entry.files:
        return None
    return CodePrior.load(registry.path(codec.entry, "prior_static"))


def _safe(fn, anchor: list[RDPoint], test: list[RDPoint]) -> float | None:
    try:
        return float(fn([p.bpp for p in anchor], [p.psnr for p in anchor],
                        [p.bpp for p in test], [p.psnr for p in test]))
    except ValueError:
        return None


def _margin(p: RDPoint, jpeg: list[RDPoint]) -> float | None:
    ref = interp_psnr_at([j.bpp for j in jpeg], [j.psnr for j in jpeg], p.bpp)
    return None if ref is None else p.psnr - ref


# Published Kodak results (CompressAI), bpp → PSNR, quoted in docs/design.md §7; drawn for context only.
REFERENCE_POINTS = {
    "BPG (published)": [(0.161, 28.68), (0.352, 31.59)],
    "bmshj2018-factorized (published)": [(0.123, 26.91), (0.288, 29.62)],
    "bmshj2018-hyperprior (published)": [(0.131, 27.58), (0.320, 30.97)],
}


def plot_rd(report: ImageReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    xmax = max(1.0, max(p.bpp for p in report.codec) * 1.1)
    for ax, metric, label in ((axes[0], "psnr", "PSNR (dB, RGB)"), (axes[1], "ms_ssim", "MS-SSIM (RGB)")):
        for name, pts, style in ((report.model, report.codec, "o-"), ("JPEG (Pillow)", report.jpeg, "s--"),
                                 ("WebP (Pillow)", report.webp, "^--"), ("AVIF (libavif, speed 6)", report.avif, "v--"),
                                 ("JPEG 2000 (OpenJPEG)", report.jpeg2000, "d--")):
            if not pts:
                continue
            shown = [p for p in pts if p.bpp <= xmax]
            ax.plot([p.bpp for p in shown], [getattr(p, metric) for p in shown], style, label=name, ms=4)
        if metric == "psnr" and Path(report.data).name == "kodak":
            for (name, pts), marker in zip(REFERENCE_POINTS.items(), "xD+", strict=True):
                ax.plot(*zip(*pts, strict=True), marker, color="gray", ls=":", label=name, ms=5)
        ax.set_xlabel("bits per pixel (whole stream)")
        ax.set_ylabel(label)
        ax.set_xlim(0, xmax)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, framealpha=0.8)
    fig.suptitle(f"{report.model} on {report.images} images of {Path(report.data).name}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_report(r: ImageReport) -> str:
    lines = [f"model {r.model} on {r.images} images ({r.data}), onnxruntime threads {r.threads or 'all'}", "",
             "| layers | bpp | PSNR (dB) | MS-SSIM | vs JPEG (dB) | encode (s) | decode (s) |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for p, m in zip(r.codec, r.margin_over_jpeg_db, strict=True):
        ms = "n/a" if m is None else f"{m:+.2f}"
        lines.append(f"| {p.label[2:]} | {p.bpp:.3f} | {p.psnr:.2f} | {p.ms_ssim:.4f} | {ms} | "
                     f"{p.encode_s:.3f} | {p.decode_s:.3f} |")
    for name, pts in (("JPEG", r.jpeg), ("WebP", r.webp), ("AVIF", r.avif), ("JPEG 2000", r.jpeg2000)):
        if pts:
            lines += ["", f"{name} (Pillow): " + ", ".join(f"{p.label} {p.bpp:.3f}/{p.psnr:.2f}" for p in pts)]
    fmt = lambda v, u: "n/a" if v is None else f"{v:+.1f}{u}"  # noqa: E731
    lines += ["", f"BD-rate vs JPEG {fmt(r.bd_rate_vs_jpeg, '%')}, vs WebP {fmt(r.bd_rate_vs_webp, '%')}, "
              f"vs AVIF {fmt(r.bd_rate_vs_avif, '%')}, vs JPEG 2000 {fmt(r.bd_rate_vs_jpeg2000, '%')}; "
              f"BD-PSNR vs JPEG {fmt(r.bd_psnr_vs_jpeg, ' dB')}, vs WebP {fmt(r.bd_psnr_vs_webp, ' dB')}, "
              f"vs AVIF {fmt(r.bd_psnr_vs_avif, ' dB')}, vs JPEG 2000 {fmt(r.bd_psnr_vs_jpeg2000, ' dB')}", "",
              "| layer | context | raw log2 K (bits) | static prior | conditional prior | context networks | coded "
              "| coded / model |",
              "|---:|---|---:|---:|---:|---:|---:|---:|"]
    model = lambda e: e.prior_bits if math.isnan(e.network_bits) else e.network_bits  # noqa: E731  what the coder uses
    net = lambda v: "n/a" if math.isnan(v) else f"{v:.0f}"  # noqa: E731
    for e in r.entropy:
        lines.append(f"| {e.layer} | {e.context} | {e.raw_bits:.0f} | {e.static_bits:.0f} | {e.prior_bits:.0f} | "
                     f"{net(e.network_bits)} | {e.coded_bits:.0f} | {e.coded_bits / model(e):.4f} |")
    tot = {k: sum(getattr(e, k) for e in r.entropy) for k in ("raw_bits", "static_bits", "prior_bits", "coded_bits")}
    tot_model = sum(model(e) for e in r.entropy)
    lines.append(f"| all | | {tot['raw_bits']:.0f} | {tot['static_bits']:.0f} | {tot['prior_bits']:.0f} | "
                 f"{net(sum(e.network_bits for e in r.entropy))} | {tot['coded_bits']:.0f} | "
                 f"{tot['coded_bits'] / tot_model:.4f} |")
    lines.append(f"\nheader: {r.header_bytes:.1f} bytes per stream; conditional prior saves "
                 f"{100 * (1 - tot['prior_bits'] / tot['static_bits']):.1f}% against the static prior and "
                 f"{100 * (1 - tot['prior_bits'] / tot['raw_bits']):.1f}% against raw log2 K")
    return "\n".join(lines)
