"""Training a learned context model for a registered image model (``strata train context``).

::

    images/train ─►─ the model's own encoder ─►─ codes ─►─┤ per layer: float MLP over the sources,
                                                          │ added to the table prior's log-probabilities │
    images/val   ─►─ codes ─►─ bits per layer, table prior against the integer network ─┘

The codes are the ones the model's encoder emits (its RD-optimised search included), so the network
learns the statistics the coder will see. Each layer's network is trained in float32 with the table
prior's integer log-probabilities as a fixed offset (it only learns the correction), then converted
to the integer network the coder runs (:class:`strata.entropy.context.LayerNet`): int8 weights and
embeddings with one scale per tensor, activation scales from a high percentile of the float
activations on training positions. Validation reports the integer network's bits, the numbers the
stream will cost. A layer whose integer network does not beat the table prior on ``images/val`` keeps
the table (no network for it).

The run folder holds the codes (``codes_train.npz``, ``codes_val.npz``), one ``layer_<l>.npz`` per
finished layer, ``report.json`` and the assembled ``context.npz``; ``--resume`` skips finished layers.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from strata.entropy.context import LOGIT_UNIT, ContextModel, LayerNet, SourcePlanes
from strata.entropy.prior import CodePrior
from strata.frontend.image import list_images, read_image
from strata.image import ImageCodec
from strata.registry import Registry


@dataclass(frozen=True)
class ContextTrainConfig:
    """Settings of ``strata train context`` (the defaults are the shipped recipe)."""

    data: str
    model: str
    emb_dim: int = 16
    hidden: int = 128
    epochs: int = 6
    batch: int = 4096
    lr: float = 2e-3
    threads: int = 2
    seed: int = 0
    act_percentile: float = 99.99


def default_sources(layer: int, kind: str) -> tuple[list[tuple[int, int, int]], int]:
    """Sources of layer ``layer`` and the index of the one that selects the table prior's row (``kind``'s context):
    the three codes above in the layer itself, the parent layer's 3×3 neighbourhood and the grandparent code."""
    src = [(0, -1, -1), (0, -1, 0), (0, -1, 1)]
    if layer >= 1:
        src += [(1, di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1)]
    if layer >= 2:
        src.append((2, 0, 0))
    base = {"none": -1, "parent": src.index((1, 0, 0)) if layer >= 1 else -1, "above": 1}[kind]
    return src, base


def base_logits(prior: CodePrior, layer: int, none_id: int) -> np.ndarray:
    """The table prior of ``layer`` as integer logits (1/32 bit), one row per id of its base source: int32 ``[V, K]``
    (``[1, K]`` for a context-free layer). The "no code" row is the table's no-neighbour row, or its mean."""
    lp = prior.layers[layer]
    logp = np.round(LOGIT_UNIT * np.log2(lp.probabilities())).astype(np.int64)
    if lp.kind == "none":
        return logp[:1].astype(np.int32)
    out = np.empty((none_id + 1, lp.codebook_size), dtype=np.int64)
    if lp.kind == "above":  # rows 0..K-1 by code, row K: no neighbour
        out[:] = logp[-1]
        out[: lp.num_contexts - 1] = logp[:-1]
    else:  # parent: rows by the parent's code; a parent always exists
        mean = np.round(LOGIT_UNIT * np.log2(lp.probabilities().mean(axis=0))).astype(np.int64)
        out[:] = mean
        out[: lp.num_contexts] = logp
    return np.clip(out, -64 * LOGIT_UNIT, 0).astype(np.int32)


class _FloatNet(torch.nn.Module):
    def __init__(self, n_src: int, vocab: int, k: int, emb_dim: int, hidden: int) -> None:
        super().__init__()
        self.emb = torch.nn.Parameter(torch.randn(n_src, vocab, emb_dim) * 0.5)
        self.fc = torch.nn.ModuleList([torch.nn.Linear(n_src * emb_dim, hidden), torch.nn.Linear(hidden, hidden),
                                       torch.nn.Linear(hidden, k)])
        self.register_buffer("rows", torch.arange(n_src) * vocab)

    def hidden(self, ids: torch.Tensor) -> list[torch.Tensor]:
        x = self.emb.reshape(-1, self.emb.shape[-1])[ids + self.rows].flatten(1)
        outs = [x]
        for m, fc in enumerate(self.fc):
            x = fc(x)
            if m < 2:
                x = torch.relu(x)
            outs.append(x)
        return outs

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # logits in nats, without the base
        return self.hidden(ids)[-1]


def _fixed(ratio: float) -> tuple[int, int]:
    """``(mult, shift)`` with ``mult / 2**shift ≈ ratio`` and ``mult`` in ``[2**22, 2**23)`` (a relative error
    below 2**-22, and room for accumulators up to 2**30 in the exact float64 rescaling)."""
    shift = 22 - math.floor(math.log2(ratio))
    if not 1 <= shift <= 62:
        raise ValueError(f"rescaling factor {ratio} is out of range")
    return round(ratio * 2.0**shift), shift


def quantize_net(net: _FloatNet, sources: np.ndarray, base_source: int, base: np.ndarray,
                 sample: torch.Tensor, percentile: float) -> LayerNet:
    """The integer :class:`LayerNet` of a trained float network (scales as in the module docstring)."""
    with torch.no_grad():
        acts = net.hidden(sample)
        emb = net.emb.detach().numpy().astype(np.float64)
        s_x = float(np.abs(emb).max()) / 127 or 1.0
        emb_q = np.clip(np.round(emb / s_x), -127, 127).astype(np.int8)
        weights, biases, requant = [], [], []
        for m, fc in enumerate(net.fc):
            w = fc.weight.detach().numpy().T.astype(np.float64)  # [n_in, n_out]
            s_w = float(np.abs(w).max()) / 127 or 1.0
            weights.append(np.clip(np.round(w / s_w), -127, 127).astype(np.int8))
            biases.append(np.round(fc.bias.detach().numpy().astype(np.float64) / (s_x * s_w)).astype(np.int64))
            if m < 2:
                s_a = float(np.percentile(acts[m + 1].numpy(), percentile)) / 255 or 1.0
                requant.append(_fixed(s_x * s_w / s_a))
                s_x = s_a
            else:  # nats → 1/32 bit
                requant.append(_fixed(s_x * s_w * LOGIT_UNIT / math.log(2)))
    return LayerNet(sources=sources, emb=emb_q, weights=tuple(weights), biases=tuple(biases),  # type: ignore[arg-type]
                    requant=np.array(requant, dtype=np.int64), base_source=base_source, base=base)


def _positions(codes: list[np.ndarray], layer: int, sources: np.ndarray, none_id: int) -> tuple[np.ndarray, np.ndarray]:
    ids = [SourcePlanes(sources, none_id, layer, c, c.shape[1:]).ids(0, c.shape[1]) for c in codes]
    return np.concatenate(ids), np.concatenate([c[layer].reshape(-1) for c in codes])


def _int_bits(net: LayerNet, ids: np.ndarray, sym: np.ndarray) -> float:
    """Bits of ``sym`` under the quantized network: the probabilities the coder is handed."""
    bits = 0.0
    for i in range(0, len(sym), 1 << 15):
        p = net.probabilities(ids[i:i + (1 << 15)])
        bits -= float(np.log2(p[np.arange(len(p)), sym[i:i + (1 << 15)]]).sum())
    return bits


def _codes(codec: ImageCodec, folder: Path, cache: Path, log: Callable[[str], object]) -> list[np.ndarray]:
    if cache.exists():
        with np.load(cache) as z:
            return [z[k].astype(np.int64) for k in sorted(z.files, key=lambda s: int(s[1:]))]
    files = list_images(folder)
    if not files:
        raise ValueError(f"no images in {folder}")
    t = time.perf_counter()
    codes = [codec.encode(read_image(f.read_bytes())).codes.astype(np.int64) for f in files]
    np.savez_compressed(cache, **{f"c{i}": c.astype(np.uint16) for i, c in enumerate(codes)})
    log(f"{folder}: codes of {len(codes)} images in {time.perf_counter() - t:.0f} s")
    return codes


def fit_layer(prior: CodePrior, layer: int, train: list[np.ndarray], val: list[np.ndarray],
              cfg: ContextTrainConfig) -> tuple[LayerNet, float, float, np.ndarray]:
    """Train layer ``layer``'s network on the code stacks ``train`` (int ``[L, H, W]`` each) and measure it on
    ``val``: ``(integer network, validation bits under the table prior, under the network, validation symbols)``.

    The network learns a correction to the table prior's integer log-probabilities (a fixed offset), in float32,
    then becomes the integer network the coder runs (:func:`quantize_net`); its bits are the integer network's.
    """
    none_id = max(prior.codebook_sizes)
    torch.manual_seed(cfg.seed + layer)
    src_list, base_source = default_sources(layer, prior.layers[layer].kind)
    sources = np.array(src_list, dtype=np.int64)
    base = base_logits(prior, layer, none_id)
    ids, sym = _positions(train, layer, sources, none_id)
    vids, vsym = _positions(val, layer, sources, none_id)
    base_idx = ids[:, base_source] if base_source >= 0 else np.zeros(len(ids), dtype=np.int64)
    base_nat = torch.from_numpy(base.astype(np.float32) * (math.log(2) / LOGIT_UNIT))
    x, y, b = torch.from_numpy(ids), torch.from_numpy(sym), torch.from_numpy(base_idx)
    net = _FloatNet(len(sources), none_id + 1, prior.codebook_sizes[layer], cfg.emb_dim, cfg.hidden)
    opt = torch.optim.Adam(net.parameters(), cfg.lr)
    per_epoch = max(1, len(y) // cfg.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.epochs * per_epoch)
    gen = torch.Generator().manual_seed(cfg.seed + layer)
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(y), generator=gen)
        for s in range(per_epoch):
            i = perm[s * cfg.batch:(s + 1) * cfg.batch]
            loss = torch.nn.functional.cross_entropy(net(x[i]) + base_nat[b[i]], y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    sample = x[torch.randperm(len(y), generator=gen)[: 1 << 17]]
    int_net = quantize_net(net, sources, base_source, base, sample, cfg.act_percentile)
    table_bits = sum(float(prior.cross_entropy_bits(c[: layer + 1])[layer]) for c in val)
    return int_net, table_bits, _int_bits(int_net, vids, vsym), vsym


def train_context(cfg: ContextTrainConfig, run: Path, models_dir: Path | None = None, resume: bool = False,
                  log: Callable[[str], object] = print) -> ContextModel:
    """Train (or, with ``resume``, finish) the context model of ``cfg.model`` in ``run``; returns it, saved as
    ``run/context.npz`` with ``run/report.json`` (validation bits per layer, table prior and network)."""
    data = Path(cfg.data)
    for sub in ("train", "val"):
        if "kodak" in str((data / sub).resolve()).lower():
            raise ValueError("Kodak is for evaluation only; the context model is trained on train/ and chosen on val/")
    run = Path(run)
    if run.exists() and any(run.iterdir()) and not resume:
        raise ValueError(f"run folder {run} is not empty; pass --resume to continue it")
    saved = run / "config.json"
    if resume and saved.exists():
        cfg = ContextTrainConfig(**{**json.loads(saved.read_text()), "threads": cfg.threads})
    for sub in ("train", "val"):
        if not (Path(cfg.data) / sub).is_dir():
            raise ValueError(f"image folder {Path(cfg.data) / sub} does not exist")
    codec = ImageCodec.load(Registry(models_dir), cfg.model, encoder="full")  # before the run folder is made
    if codec.quantizer.top_layers:
        raise ValueError(f"model {cfg.model!r} has top layers on a coarser grid; "
                         "context networks serve one-scale models")
    run.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(asdict(cfg), indent=1))
    torch.set_num_threads(cfg.threads)
    prior = codec.prior
    train = _codes(codec, data / "train", run / "codes_train.npz", log)
    val = _codes(codec, data / "val", run / "codes_val.npz", log)
    report: dict = json.loads((run / "report.json").read_text()) if (run / "report.json").exists() else {"layers": {}}
    report["prior_sha256"] = codec.entry.files["prior"].sha256
    nets: list[LayerNet | None] = []
    for layer in range(prior.num_layers):
        done = run / f"layer_{layer}.npz"
        if done.exists() or done.with_suffix(".table").exists():
            nets.append(ContextModel.load(done).nets[0] if done.exists() else None)
            continue
        t0 = time.perf_counter()
        int_net, table_bits, net_bits, vsym = fit_layer(prior, layer, train, val, cfg)
        keep = net_bits < table_bits
        report["layers"][str(layer)] = {"table_bits": table_bits, "net_bits": net_bits, "kept": keep,
                                        "positions": int(len(vsym)), "seconds": time.perf_counter() - t0}
        log(f"layer {layer}: validation {table_bits / len(vsym):.3f} → {net_bits / len(vsym):.3f} bits per position "
            f"({100 * (net_bits / table_bits - 1):+.2f}%){'' if keep else ', table kept'}, "
            f"{time.perf_counter() - t0:.0f} s")
        chosen = int_net if keep else None
        if chosen is not None:
            ContextModel((chosen,)).save(done)
        else:
            done.with_suffix(".table").touch()
        nets.append(chosen)
        (run / "report.json").write_text(json.dumps(report, indent=1))
    model = ContextModel(tuple(nets))
    model.save(run / "context.npz")
    total_t = sum(v["table_bits"] for v in report["layers"].values())
    total_n = sum(min(v["net_bits"], v["table_bits"]) for v in report["layers"].values())
    log(f"all layers: validation {100 * (total_n / total_t - 1):+.2f}% bits against the table prior")
    return model


__all__ = ["ContextTrainConfig", "base_logits", "default_sources", "fit_layer", "quantize_net", "train_context"]
