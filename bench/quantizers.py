"""The quantizer families side by side: one table per family and layer count, one RD plot.

For each exported image model (any family; ``--model NAME`` or ``--model NAME=RUN_DIR``) it measures
on the images of ``--data`` (Kodak for the docs):

* per layer count ``k``: bpp of the whole stream, PSNR and MS-SSIM (RGB), as ``strata eval images``;
* per layer: codebook perplexity ``2^H`` and dead codes (codes never used) over all the images' codes
  (a two-scale model's top layers counted on their own grid);
* code search time per image (the family's numpy search on the ``g_a`` latent, all layers, median of
  ``--repeat`` runs), and ``g_a`` time for scale;
* with ``RUN_DIR``: training steps per second (median over the run's log), the last logged step and
  the validation PSNR at every layer count there.

For HR-VQ models it also times the codebook tree against a flat search of *equal capacity*: the
``K^d`` sums of every root-to-depth-``d`` path, searched exhaustively (``d = 2``: 4 096 codes for
``K = 64``), with the mean squared error each leaves.

Prints the tables and writes ``quantizers.json``, ``quantizers.md``, ``quantizers-rd.png`` and one
``<model>.json`` per model (``--reuse`` takes those instead of measuring again) to ``--out``::

    python bench/quantizers.py --models /work/runs/fam-models --data ../shared/data/images/kodak \\
        --model cmp-rvq=/work/runs/image-rvq-9k --model cmp-hrvq=/work/runs/image-hrvq ... --out docs/eval/quantizers
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from strata.bitstream import truncate
from strata.errors import InputError
from strata.eval.metrics import bd_psnr, bd_rate, interp_psnr_at, ms_ssim, psnr
from strata.frontend.image import list_images, pad_uint8, read_image
from strata.image import ImageCodec
from strata.quantize.tree import TreeCodebooks
from strata.registry import Registry


@dataclass
class FamilyReport:
    model: str
    quantizer: str
    layers: int
    top_layers: int
    codebook_sizes: list[int]
    bpp: list[float]  # per layer count k = 1..L, mean over images
    psnr: list[float]
    ms_ssim: list[float]
    perplexity: list[float]  # per layer
    dead_codes: list[int]  # per layer
    search_ms: float  # numpy code search of all layers, per image
    analysis_ms: float  # g_a, per image
    run: dict = field(default_factory=dict)  # from the run's log.jsonl
    tree_vs_flat: list[dict] = field(default_factory=list)  # HR-VQ only


def latent_of(codec: ImageCodec, image: np.ndarray) -> np.ndarray:
    padded = pad_uint8(image, codec.factor)
    return codec.analysis(padded.astype(np.float32) / 255.0)


def run_summary(run: Path) -> dict:
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    if not records:
        return {}
    last = records[-1]
    return {"run": str(run), "last_step": last["step"],
            "steps_per_s": statistics.median(r["steps_per_s"] for r in records), "val_psnr": last["psnr"],
            "val_bpp_static": last["bpp_static"], "val_perplexity": last["perplexity"]}


def tree_against_flat(tree: TreeCodebooks, latents: list[np.ndarray], depths: tuple[int, ...]) -> list[dict]:
    """Time and error of the tree search against an exhaustive search over the same ``K^d`` path sums."""
    rows = []
    K = tree.root.shape[0]
    for d in depths:
        if d < 2 or d > tree.layers:
            continue
        leaves = tree.root[:, None, :] + tree.children[0]  # [K, K, D]: root a + child b of a
        for layer in range(2, d):  # deeper: each path extended by every child of its last code
            last = np.arange(K**layer) % K  # the last code of each of the K^layer paths so far
            leaves = (leaves.reshape(-1, 1, tree.dim) + tree.children[layer - 1][last]).reshape(-1, tree.dim)
        leaves = leaves.reshape(-1, tree.dim).astype(np.float32)
        norms = (leaves * leaves).sum(1)
        t_tree, t_flat, e_tree, e_flat, n = 0.0, 0.0, 0.0, 0.0, 0
        for z in latents:
            flat = z.transpose(0, 2, 3, 1).reshape(-1, tree.dim)
            t0 = time.perf_counter()
            codes = tree.encode(z, d)
            t1 = time.perf_counter()
            rec = tree.decode(codes).transpose(0, 2, 3, 1).reshape(-1, tree.dim)
            t2 = time.perf_counter()
            best = np.empty(len(flat), dtype=np.int64)
            block = max(1, (1 << 24) // len(leaves))  # distance matrices of at most 64 MB
            for lo in range(0, len(flat), block):
                best[lo : lo + block] = (norms[None, :] - 2.0 * (flat[lo : lo + block] @ leaves.T)).argmin(1)
            t3 = time.perf_counter()
            t_tree += t1 - t0
            t_flat += t3 - t2
            e_tree += float(((rec - flat) ** 2).sum())
            e_flat += float(((leaves[best] - flat) ** 2).sum())
            n += flat.size
        rows.append({"depth": d, "codes": int(len(leaves)), "tree_ms": 1e3 * t_tree / len(latents),
                     "flat_ms": 1e3 * t_flat / len(latents), "speedup": t_flat / t_tree,
                     "tree_mse": e_tree / n, "flat_mse": e_flat / n})
    return rows


def evaluate(registry: Registry, name: str, run: Path | None, files: list[Path], repeat: int,
             flat_images: int, flat_depths: tuple[int, ...]) -> FamilyReport:
    codec = ImageCodec.load(registry, name)
    L, t = codec.layers, codec.quantizer.top_layers
    rows, counts = [], [np.zeros(codec.quantizer.codebook_size(i), np.int64) for i in range(L)]
    search, analysis, latents = [], [], []
    for path in files:
        image = read_image(path.read_bytes())
        pixels = image.shape[0] * image.shape[1]
        full = codec.compress(image)
        per_k = []
        for k in range(1, L + 1):
            decoded = codec.decompress(truncate(full, k))
            per_k.append((8 * len(truncate(full, k)) / pixels, psnr(image, decoded), ms_ssim(image, decoded)))
        rows.append(per_k)
        codes = codec.decompress_codes(full).codes
        for i in range(L):
            plane = codes[i, ::2, ::2] if i < t else codes[i]
            counts[i] += np.bincount(plane.ravel(), minlength=len(counts[i]))
        t0 = time.perf_counter()
        z = latent_of(codec, image)
        analysis.append(time.perf_counter() - t0)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            codec.quantizer.encode(z)
            times.append(time.perf_counter() - t0)
        search.append(statistics.median(times))
        if len(latents) < flat_images:
            latents.append(z)
        print(f"  {name} {path.name}: " + " ".join(f"{b:.3f}/{p:.2f}" for b, p, _ in per_k), flush=True)
    mean = np.array(rows).mean(0)
    ppl, dead = [], []
    for c in counts:
        p = c[c > 0] / c.sum()
        ppl.append(float(2 ** -(p * np.log2(p)).sum()))
        dead.append(int((c == 0).sum()))
    tree = codec.quantizer if isinstance(codec.quantizer, TreeCodebooks) else None
    return FamilyReport(
        model=name, quantizer=codec.entry.quantizer, layers=L, top_layers=t,
        codebook_sizes=list(codec.entry.codebook_sizes), bpp=mean[:, 0].tolist(), psnr=mean[:, 1].tolist(),
        ms_ssim=mean[:, 2].tolist(), perplexity=ppl, dead_codes=dead,
        search_ms=1e3 * statistics.mean(search), analysis_ms=1e3 * statistics.mean(analysis),
        run=run_summary(run) if run else {},
        tree_vs_flat=tree_against_flat(tree, latents, flat_depths) if tree is not None and latents else [],
    )


RATES = (0.1, 0.25, 0.5)  # bpp at which the families' PSNR is compared (interpolated in log rate)


def comparison(reports: list[FamilyReport]) -> list[dict]:
    """Each model against the first (the anchor): BD-rate and BD-PSNR, and PSNR at :data:`RATES` bpp."""
    anchor = reports[0]
    rows = []
    for r in reports:
        row = {"model": r.model, "quantizer": r.quantizer,
               "psnr_at": {str(b): interp_psnr_at(r.bpp, r.psnr, b) for b in RATES}}
        if r is not anchor:
            try:
                row["bd_rate"] = bd_rate(anchor.bpp, anchor.psnr, r.bpp, r.psnr)
                row["bd_psnr"] = bd_psnr(anchor.bpp, anchor.psnr, r.bpp, r.psnr)
            except InputError as e:  # curves that do not overlap
                row["note"] = str(e)
        rows.append(row)
    return rows


def format_tables(reports: list[FamilyReport], data: str, images: int) -> str:
    lines = [f"# Quantizer families on {images} images of {data}", ""]
    head = " | ".join(f"PSNR at {b} bpp" for b in RATES)
    lines += [f"Against {reports[0].model} (BD over the common range; PSNR interpolated in log bpp, – outside "
              "a curve):", "", f"| model | family | BD-rate | BD-PSNR | {head} |",
              "|---|---|---:|---:|" + "---:|" * len(RATES)]
    for row in comparison(reports):
        at = " | ".join("–" if v is None else f"{v:.2f}" for v in row["psnr_at"].values())
        bd = (f"{row['bd_rate']:+.1f}% | {row['bd_psnr']:+.2f} dB" if "bd_rate" in row
              else ("anchor | anchor" if row["model"] == reports[0].model else "– | –"))
        lines.append(f"| {row['model']} | {row['quantizer']} | {bd} | {at} |")
    lines.append("")
    lines += ["| model | family | k | bpp | PSNR (dB) | MS-SSIM |", "|---|---|---:|---:|---:|---:|"]
    for r in reports:
        for k in range(r.layers):
            lines.append(f"| {r.model} | {r.quantizer} | {k + 1} | {r.bpp[k]:.3f} | {r.psnr[k]:.2f} "
                         f"| {r.ms_ssim[k]:.4f} |")
    lines += ["", "| model | family | perplexity per layer | dead codes per layer | search ms/image | g_a ms/image "
              "| train steps/s | steps |", "|---|---|---|---|---:|---:|---:|---:|"]
    for r in reports:
        ppl = " ".join(f"{p:.0f}" for p in r.perplexity)
        dead = " ".join(str(d) for d in r.dead_codes)
        sps = f"{r.run['steps_per_s']:.2f}" if r.run else "–"
        steps = str(r.run.get("last_step", "–")) if r.run else "–"
        lines.append(f"| {r.model} | {r.quantizer} | {ppl} | {dead} | {r.search_ms:.1f} | {r.analysis_ms:.0f} "
                     f"| {sps} | {steps} |")
    for r in reports:
        if r.tree_vs_flat:
            lines += ["", f"{r.model}: codebook tree against an exhaustive search of equal capacity",
                      "", "| depth | codes | tree ms/image | flat ms/image | speed-up | tree MSE | flat MSE |",
                      "|---:|---:|---:|---:|---:|---:|---:|"]
            for row in r.tree_vs_flat:
                lines.append(f"| {row['depth']} | {row['codes']} | {row['tree_ms']:.1f} | {row['flat_ms']:.1f} "
                             f"| {row['speedup']:.1f}× | {row['tree_mse']:.5f} | {row['flat_mse']:.5f} |")
    return "\n".join(lines)


def plot(reports: list[FamilyReport], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, metric, label in ((axes[0], "psnr", "PSNR (dB, RGB)"), (axes[1], "ms_ssim", "MS-SSIM (RGB)")):
        for r in reports:
            ax.plot(r.bpp, getattr(r, metric), "o-", ms=3, label=f"{r.model} ({r.quantizer})")
        ax.set_xlabel("bits per pixel (whole stream)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=Path, required=True, help="models folder holding the exported models")
    ap.add_argument("--model", action="append", required=True, help="NAME or NAME=RUN_DIR (repeat)")
    ap.add_argument("--data", type=Path, required=True, help="image folder (Kodak for the docs)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--limit", type=int, help="first N images only")
    ap.add_argument("--repeat", type=int, default=3, help="search timings per image (median)")
    ap.add_argument("--flat-images", type=int, default=4, help="images for the tree-against-flat search timing")
    ap.add_argument("--flat-depths", default="2,3", help="tree depths compared with a flat search")
    ap.add_argument("--reuse", action="store_true",
                    help="take a model's figures from OUT/<model>.json when an earlier run wrote them")
    args = ap.parse_args()
    registry = Registry(args.models)
    files = list_images(args.data)[: args.limit]
    depths = tuple(int(d) for d in args.flat_depths.split(",") if d.strip())
    reports = []
    args.out.mkdir(parents=True, exist_ok=True)
    for spec in args.model:
        name, _, run = spec.partition("=")
        saved = args.out / f"{name}.json"
        if args.reuse and saved.is_file():  # measured by an earlier run on the same data
            reports.append(FamilyReport(**json.loads(saved.read_text())))
            continue
        reports.append(evaluate(registry, name, Path(run) if run else None, files, args.repeat, args.flat_images,
                                depths))
        saved.write_text(json.dumps(asdict(reports[-1]), indent=2) + "\n")
    text = format_tables(reports, str(args.data), len(files))
    print(text)
    (args.out / "quantizers.json").write_text(json.dumps({"reports": [asdict(r) for r in reports],
                                                           "comparison": comparison(reports)}, indent=2) + "\n")
    (args.out / "quantizers.md").write_text(text + "\n")
    plot(reports, args.out / "quantizers-rd.png", f"Quantizer families on {len(files)} images of {args.data.name}")


if __name__ == "__main__":
    main()
