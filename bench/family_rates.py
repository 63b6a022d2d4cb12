"""Rate of a trained image checkpoint's codes under two static entropy models, for any quantizer family.

The trainer's ``bpp_static`` is the sum of each layer's *marginal* code entropy. An HR-VQ child
code only means something given its parent, so a coder would rather use one table per parent
code: ``H(c_l | c_{l-1})``. This script fits both kinds of table on the codes of centre crops of
``train/`` (add-½ smoothing) and reports the cross-entropy of the ``val/`` codes under them
(an honest held-out rate, in bits per pixel, cumulative over layers), next to the val PSNR
per layer count. It also checks that the numpy search gives the torch codes.

    python bench/family_rates.py /work/runs/image-hrvq/best.pt [--crop 256]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from strata.train.data import center_crops, load_images
from strata.train.image import ImageAutoencoder, ImageTrainConfig, psnr, read_checkpoint
from strata.train.quantize.families import decode_codes, inference_codebooks


@torch.no_grad()
def latents(model: ImageAutoencoder, crops: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(crops).float() / 255
    return torch.cat([model.g_a(chunk) for chunk in x.split(8)]).float().numpy()


def cross_entropy_bits(train: np.ndarray, test: np.ndarray, K: int, context: np.ndarray | None = None,
                       test_context: np.ndarray | None = None) -> float:
    """Total bits of ``test`` codes under add-½ tables fitted on ``train`` (one table per context code)."""
    if context is None:
        counts = np.bincount(train, minlength=K) + 0.5
        return float(-np.log2(counts[test] / counts.sum()).sum())
    counts = np.bincount(context * K + train, minlength=K * K).reshape(K, K) + 0.5
    p = counts / counts.sum(1, keepdims=True)
    return float(-np.log2(p[test_context, test]).sum())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    ckpt = read_checkpoint(args.checkpoint)
    cfg = ImageTrainConfig.from_dict(ckpt["config"])
    model = ImageAutoencoder.from_config(cfg.net, cfg.quantizer_config)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()})
    model.eval()
    books = inference_codebooks(model.quantizer)
    L, K = books.layers, books.codebook_size(0)
    cache = args.checkpoint.parent / "cache"
    data = Path(cfg.data)
    y_train = latents(model, center_crops(load_images(data / "train", cache), args.crop))
    val_crops = center_crops(load_images(data / "val", cache), args.crop)
    y_val = latents(model, val_crops)
    c_train, c_val = books.encode(y_train), books.encode(y_val)
    torch_codes = model.quantizer(torch.from_numpy(y_val), L).codes.numpy()
    agree = float((torch_codes == c_val).mean())

    pixels = val_crops.shape[0] * args.crop * args.crop
    marginal, conditional, psnrs = [], [], []
    x = torch.from_numpy(val_crops).float() / 255
    for layer in range(L):
        tr, te = c_train[layer].ravel(), c_val[layer].ravel()
        marginal.append(cross_entropy_bits(tr, te, K) / pixels)
        if layer == 0:
            conditional.append(marginal[-1])
        else:
            conditional.append(cross_entropy_bits(tr, te, K, c_train[layer - 1].ravel(), c_val[layer - 1].ravel())
                               / pixels)
        with torch.no_grad():
            yq = decode_codes(model.quantizer, torch.from_numpy(c_val[: layer + 1]))
            xh = torch.cat([model.g_s(chunk) for chunk in yq.split(8)]).clamp(0, 1)
        xh = (xh * 255).round() / 255
        psnrs.append(psnr(float(((xh - x) ** 2).mean())))
    result = {
        "checkpoint": str(args.checkpoint), "family": cfg.quantizer, "layers": L, "codebook_size": K,
        "numpy_torch_code_agreement": agree, "val_psnr": psnrs,
        "bpp_marginal": np.cumsum(marginal).tolist(), "bpp_parent_conditional": np.cumsum(conditional).tolist(),
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
