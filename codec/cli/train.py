"""``strata train image | audio | vocoder | encoder | decoder | context``: resumable training runs.

They need the ``train`` extra.

Each trainer has its own flags. A run folder holds ``config.json``, ``last.pt``, ``best.pt`` and a
log; ``--resume`` continues it. Settings without a flag (the loss weights of experiments, network
widths) come from ``--config FILE``: a JSON object of the trainer's config fields, applied to a new
run (a resumed run keeps its own ``config.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from strata.cli.common import CliError, positive


def _config_overrides(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        overrides = json.loads(Path(path).read_text())
    except OSError as e:
        raise CliError(f"cannot read --config {path}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise CliError(f"--config {path} is not valid JSON: {e}") from None
    if not isinstance(overrides, dict):
        raise CliError(f"--config {path} must hold a JSON object of config fields")
    return overrides


def _apply(config_cls: type, cfg: Any, overrides: dict[str, Any], path: str | None) -> Any:
    """``cfg`` with the fields of ``overrides`` replaced (nested configs merged), validated."""
    if not overrides:
        return cfg
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise CliError(f"--config {path}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    merged = cfg.to_dict()
    for key, value in overrides.items():
        if isinstance(merged.get(key), dict) and isinstance(value, dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    try:
        return config_cls.from_dict(merged)
    except (TypeError, ValueError) as e:
        raise CliError(f"--config {path}: {e}") from None


def _check_common(args: argparse.Namespace) -> None:
    """Numbers no run can use, refused before anything loads."""
    for flag, value, low in (("--steps", args.steps, 1), ("--threads", args.threads, 1)):
        positive(flag, value, low)
    for flag, value in (("--lr", args.lr), ("--max-minutes", args.max_minutes)):
        if value is not None and not value > 0:
            raise CliError(f"{flag} must be > 0, got {value}")
    if getattr(args, "eval_every", None) is not None:
        positive("--eval-every", args.eval_every)
    if getattr(args, "stop_at", None) is not None:
        positive("--stop-at", args.stop_at)
    decay = getattr(args, "decay_start", None)
    if decay is not None and not 0 <= decay <= 1:
        raise CliError(f"--decay-start must be in [0, 1], got {decay}")
    sets = getattr(args, "sets", None)
    if sets is not None and not [s for s in sets.split(",") if s.strip()]:
        raise CliError(f"--sets names no set: {sets!r}")


def _codec_config(args: argparse.Namespace, trainer: Any, config_cls: type) -> Any:
    """The config of an image or mel codec run: the run's own when resuming, else the defaults (or those
    of ``--init-from``'s checkpoint) with ``--config`` and the flags applied."""
    run = Path(args.run)
    cfg_path = run / "config.json"
    if args.resume and cfg_path.exists():
        cfg = config_cls.from_dict(json.loads(cfg_path.read_text()))
    elif args.resume and (run / "last.pt").exists():  # config.json lost: last.pt carries the run's config
        cfg = config_cls.from_dict(trainer.read_checkpoint(run / "last.pt")["config"])
    else:
        if args.init_from:
            cfg = config_cls.from_dict(trainer.read_checkpoint(Path(args.init_from))["config"])
        else:
            cfg = config_cls()
        cfg = _apply(config_cls, cfg, _config_overrides(args.config), args.config)
    cfg.data = args.data
    if getattr(args, "sets", None):
        cfg.sets = tuple(s.strip() for s in args.sets.split(",") if s.strip())
    for attr in ("steps", "decay_start", "lr", "threads", "eval_every"):
        if getattr(args, attr, None) is not None:
            setattr(cfg, attr, getattr(args, attr))
    return cfg


# strata.train.quantize.families.FAMILIES (not imported: it needs torch)
QUANTIZERS = ("rvq", "hrvq", "rsq", "topbottom", "sq-topbottom")


def cmd_train_image(args: argparse.Namespace) -> int:
    _check_common(args)
    from strata.train import image as trainer

    try:
        cfg = _codec_config(args, trainer, trainer.ImageTrainConfig)
        if args.quantizer is not None and args.quantizer != cfg.quantizer:
            if args.resume and (Path(args.run) / "last.pt").exists():
                raise CliError(f"--quantizer {args.quantizer} cannot change a run being resumed ({cfg.quantizer})")
            cfg = dataclasses.replace(cfg, quantizer=args.quantizer)
        trainer.train(cfg, Path(args.run), resume=args.resume, max_minutes=args.max_minutes,
                      init_from=Path(args.init_from) if args.init_from else None, stop_at=args.stop_at)
    except (FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from None
    return 0


def cmd_train_audio(args: argparse.Namespace) -> int:
    _check_common(args)
    from strata.train import audio as trainer

    try:
        cfg = _codec_config(args, trainer, trainer.AudioTrainConfig)
        if args.quantizer is not None and args.quantizer != cfg.quantizer:
            if args.resume and (Path(args.run) / "last.pt").exists():
                raise CliError(f"--quantizer {args.quantizer} cannot change a run being resumed ({cfg.quantizer})")
            cfg = dataclasses.replace(cfg, quantizer=args.quantizer)
        trainer.train(cfg, Path(args.run), resume=args.resume, max_minutes=args.max_minutes,
                      init_from=Path(args.init_from) if args.init_from else None, stop_at=args.stop_at)
    except (FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from None
    return 0


def _widths(flag: str, text: str | None) -> tuple[int, int, int] | None:
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise CliError(f"{flag} must be three comma-separated integers, got {text!r}") from None
    if len(values) != 3:
        raise CliError(f"{flag} must be three comma-separated integers, got {text!r}")
    return values  # type: ignore[return-value]


def cmd_train_encoder(args: argparse.Namespace) -> int:
    _check_common(args)
    channels, blocks = _widths("--enc-channels", args.enc_channels), _widths("--enc-blocks", args.enc_blocks)
    if channels is not None and min(channels) < 1:
        raise CliError(f"--enc-channels must be positive, got {args.enc_channels}")
    if blocks is not None and min(blocks) < 0:
        raise CliError(f"--enc-blocks must be >= 0, got {args.enc_blocks}")
    from strata.train import encoder as trainer

    run = Path(args.run)
    try:
        if args.resume and (run / "config.json").exists():
            cfg = trainer.EncoderTrainConfig.from_dict(json.loads((run / "config.json").read_text()))
        else:
            if args.teacher is None:
                raise CliError("--teacher is required for a new run")
            cfg = _apply(trainer.EncoderTrainConfig, trainer.EncoderTrainConfig(teacher=args.teacher),
                         _config_overrides(args.config), args.config)
            if channels is not None:
                cfg.enc_channels = channels
            if blocks is not None:
                cfg.enc_blocks = blocks
        cfg.data = args.data
        for attr in ("steps", "lr", "threads", "eval_every"):
            if getattr(args, attr, None) is not None:
                setattr(cfg, attr, getattr(args, attr))
        trainer.train(cfg, run, resume=args.resume, max_minutes=args.max_minutes)
    except (FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from None
    return 0


def cmd_train_decoder(args: argparse.Namespace) -> int:
    _check_common(args)
    positive("--crop", args.crop)
    from strata.registry import default_models_dir
    from strata.train import decoder as trainer

    run = Path(args.run)
    try:
        if args.resume and (run / "config.json").exists():
            cfg = trainer.DecoderTrainConfig.from_dict(json.loads((run / "config.json").read_text()))
        else:
            if args.model is None or args.checkpoint is None:
                raise CliError("--model and --checkpoint are required for a new run")
            models = str(Path(args.models) if args.models else default_models_dir())
            cfg = _apply(trainer.DecoderTrainConfig,
                         trainer.DecoderTrainConfig(model=args.model, checkpoint=args.checkpoint, models=models),
                         _config_overrides(args.config), args.config)
        cfg.data = args.data
        for attr in ("steps", "lr", "threads", "eval_every", "crop"):
            if getattr(args, attr, None) is not None:
                setattr(cfg, attr, getattr(args, attr))
        trainer.train(cfg, run, resume=args.resume, max_minutes=args.max_minutes)
    except (FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from None
    return 0


def cmd_train_context(args: argparse.Namespace) -> int:
    for flag in ("epochs", "hidden", "threads"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise CliError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    from strata.train import context as trainer

    run = Path(args.run)
    if not args.resume and args.model is None:
        raise CliError("--model is required for a new run")
    cfg = trainer.ContextTrainConfig(data=args.data, model=args.model or "")
    cfg = dataclasses.replace(cfg, **{k: getattr(args, k) for k in ("epochs", "hidden", "threads")
                                      if getattr(args, k) is not None})
    try:
        trainer.train_context(cfg, run, models_dir=Path(args.models) if args.models else None, resume=args.resume)
    except (FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from None
    return 0


def _stft_resolutions(text: str) -> tuple[tuple[int, int, int], ...]:
    """``"512:50:240,1024:120:600"`` → ``((512, 50, 240), (1024, 120, 600))`` (n_fft:hop:win)."""
    out = []
    for item in text.split(","):
        parts = item.strip().split(":")
        try:
            if len(parts) != 3:
                raise ValueError
            out.append(tuple(int(v) for v in parts))
        except ValueError:
            raise CliError(f"--stft-resolutions takes n_fft:hop:win triples, comma-separated; got {item!r}") from None
    return tuple(out)


def cmd_train_vocoder(args: argparse.Namespace) -> int:
    _check_common(args)
    positive("--recon-steps", args.recon_steps, 0)
    from strata.train.checkpoint import read_checkpoint
    from strata.train.nets.vocos_model import VocosConfig
    from strata.train.vocoder import VocoderTrainConfig, generator_config, train

    run = Path(args.run)
    cfg_path = run / "config.json"
    resuming = args.resume and (cfg_path.exists() or (run / "last.pt").exists())
    if resuming:  # the run's own config; last.pt carries a copy should config.json be missing
        saved = (json.loads(cfg_path.read_text()) if cfg_path.exists()
                 else read_checkpoint(run / "last.pt", ("train_config",))["train_config"])
        cfg = VocoderTrainConfig.from_dict(saved)
    else:
        if args.init_from:
            ckpt = read_checkpoint(args.init_from, ("config", "generator"))
            net = generator_config(ckpt["config"])
            if args.arch and args.arch != ("vocos" if isinstance(net, VocosConfig) else "hifigan"):
                raise CliError(f"--init-from {args.init_from} holds a generator of another --arch than {args.arch}")
            cfg = (VocoderTrainConfig(arch="vocos", vocos=net) if isinstance(net, VocosConfig)
                   else VocoderTrainConfig(gen=net))
        else:
            cfg = VocoderTrainConfig(arch=args.arch or "hifigan")
        cfg = _apply(VocoderTrainConfig, cfg, _config_overrides(args.config), args.config)
    cfg.data = args.data
    if args.sets:
        cfg.sets = tuple(s.strip() for s in args.sets.split(",") if s.strip())
    if args.steps:
        cfg.steps = args.steps
    if args.recon_steps is not None:
        cfg.recon_steps = args.recon_steps
    if args.stft_weight is not None:
        if args.stft_weight < 0:
            raise CliError(f"--stft-weight must be >= 0, got {args.stft_weight}")
        cfg.stft_weight = args.stft_weight
    if resuming and args.arch and args.arch != cfg.arch:
        raise CliError(f"--arch {args.arch} cannot change a run being resumed (it trains {cfg.arch})")
    if args.disc:
        adversarial = resuming and (run / "last.pt").exists() and "mpd" in read_checkpoint(run / "last.pt", ())
        if adversarial and args.disc != cfg.disc:
            raise CliError(f"--disc {args.disc} cannot change a run whose adversarial phase has begun ({cfg.disc})")
        cfg.disc = args.disc
    if args.balanced_upsampling:
        if cfg.arch != "hifigan":
            raise CliError("--balanced-upsampling applies to --arch hifigan")
        if resuming and not cfg.gen.balanced_upsampling:
            raise CliError("--balanced-upsampling cannot change a run being resumed; start a new run with --init-from")
        cfg.gen = dataclasses.replace(cfg.gen, balanced_upsampling=True)
    if args.stft_resolutions is not None:
        cfg.stft_resolutions = _stft_resolutions(args.stft_resolutions)
    if args.d_width is not None:
        if not 0 < args.d_width <= 1:
            raise CliError(f"--d-width must be in (0, 1], got {args.d_width}")
        narrowed = cfg.with_discriminator_width(args.d_width)
        if resuming and (narrowed.mpd_channels, narrowed.msd_channels) != (cfg.mpd_channels, cfg.msd_channels):
            raise CliError("--d-width cannot change a run being resumed; start a new run with --init-from")
        cfg = narrowed
    if args.lr is not None:
        cfg.lr = args.lr
    if args.threads:
        cfg.threads = args.threads
    if args.amp:
        cfg.amp = True
    try:
        cfg = dataclasses.replace(cfg)  # validates the overrides above (__post_init__)
        train(cfg, run, resume=args.resume, max_minutes=args.max_minutes,
              init_from=Path(args.init_from) if args.init_from else None)
    except (FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from None
    return 0


def _common_flags(p: argparse.ArgumentParser, data_help: str) -> None:
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--run", required=True, help="run folder (config.json, last.pt, best.pt, log)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run with its own config")
    p.add_argument("--init-from", help="start a new run from the weights of a checkpoint (a run's best.pt, "
                   "or a compact checkpoints/<name>/checkpoint.pt)")
    p.add_argument("--config", help="JSON object of config fields for a new run (settings without a flag)")
    p.add_argument("--steps", type=int, help="total steps of the schedule")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--threads", type=int, help="torch threads (default 2)")
    p.add_argument("--max-minutes", type=float, help="stop (with a checkpoint) after this many minutes")


def _schedule_flags(p: argparse.ArgumentParser, *, steps: int, lr: float, threads: int, eval_every: int) -> None:
    """``--config``, ``--steps``, ``--lr``, ``--threads``, ``--eval-every``, ``--max-minutes`` of a trainer whose
    config has these defaults (given here: the config classes import torch, which ``--help`` does not need)."""
    p.add_argument("--config", help="JSON object of config fields for a new run (settings without a flag)")
    p.add_argument("--steps", type=int, help=f"total steps of the schedule (default {steps})")
    p.add_argument("--lr", type=float, help=f"peak learning rate (default {lr:g})")
    p.add_argument("--threads", type=int, help=f"torch threads (default {threads})")
    p.add_argument("--eval-every", type=int, help=f"steps between evaluations and checkpoints (default {eval_every})")
    p.add_argument("--max-minutes", type=float, help="stop (with a checkpoint) after this many minutes")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    tr = sub.add_parser("train", help="train a model (torch; resumable)")
    kinds = tr.add_subparsers(dest="trainer", required=True, metavar="{image,audio,vocoder,encoder,context}")

    im = kinds.add_parser("image", help="the image codec: transforms and quantizer")
    _common_flags(im, "folder with train/ and val/ image sub-folders (val chooses the checkpoint)")
    im.add_argument("--decay-start", type=float, help="fraction of --steps after which the LR decays (cosine)")
    im.add_argument("--eval-every", type=int, help="steps between evaluations and checkpoints")
    im.add_argument("--stop-at", type=int, help="stop (validated, with a checkpoint) at this step of the --steps "
                    "schedule; --resume continues it")
    im.add_argument("--quantizer", choices=QUANTIZERS, help="quantizer family of a new run: rvq (residual VQ, the "
                    "default), hrvq (HR-VQVAE codebook tree), rsq (HQ-VAE stochastic residual quantization), "
                    "topbottom (VQ-VAE-2/HQ-TVAE two-scale) or sq-topbottom (its stochastic twin, SQ-VAE-2)")
    im.set_defaults(func=cmd_train_image, command_name="train image")

    au = kinds.add_parser("audio", help="the mel codec (a held-out part of the training clips chooses the checkpoint)")
    _common_flags(au, "folder with <set>/train/ sound folders")
    au.add_argument("--sets", help="comma-separated sets under --data (default speech,environment)")
    au.add_argument("--decay-start", type=float, help="fraction of --steps after which the LR decays (cosine)")
    au.add_argument("--eval-every", type=int, help="steps between evaluations and checkpoints")
    au.add_argument("--stop-at", type=int, help="stop (validated, with a checkpoint) at this step of the --steps "
                    "schedule; --resume continues it")
    au.add_argument("--quantizer", choices=("rvq", "rsq"), help="quantizer family of a new run: rvq (residual VQ, "
                    "the default) or rsq (HQ-VAE stochastic residual quantization)")
    au.set_defaults(func=cmd_train_audio, command_name="train audio")

    vo = kinds.add_parser("vocoder", help="the HiFi-GAN or Vocos vocoder (reconstruction phase, then adversarial)")
    _common_flags(vo, "folder with <set>/train/ sound folders")
    vo.add_argument("--sets", help="comma-separated sets under --data (default speech)")
    vo.add_argument("--recon-steps", type=int,
                    help="generator-only reconstruction steps before the discriminators join")
    vo.add_argument("--stft-weight", type=float,
                    help="weight of the multi-resolution STFT loss in the reconstruction phase (default 15)")
    vo.add_argument("--stft-resolutions",
                    help="n_fft:hop:win,... of the STFT loss (default 512:50:240,1024:120:600,2048:240:1200)")
    vo.add_argument("--arch", choices=("hifigan", "vocos"),
                    help="generator of a new run: hifigan (V3, the default) or vocos (ConvNeXt + inverse STFT)")
    vo.add_argument("--disc", choices=("msd", "mrd"),
                    help="second discriminator of the adversarial phase: msd (HiFi-GAN's multi-scale, the "
                    "default) or mrd (compact multi-resolution spectrogram, 0.28 M parameters)")
    vo.add_argument("--balanced-upsampling", action="store_true",
                    help="balance the transposed convolutions' phases (no frame-rate comb)")
    vo.add_argument("--d-width", type=float,
                    help="discriminator channels as a fraction of the paper's (default 1; 0.25 costs ~1/10)")
    vo.add_argument("--amp", action="store_true", help="bf16 autocast of the networks (default off)")
    vo.set_defaults(func=cmd_train_vocoder, command_name="train vocoder")

    en = kinds.add_parser("encoder", help="a lighter analysis network for a trained image model, distilled from "
                          "its own (the decoder, codebooks and prior stay; streams stay compatible)")
    en.add_argument("--data", required=True, help="folder with train/ and val/ image sub-folders (val chooses the "
                    "checkpoint)")
    en.add_argument("--run", required=True, help="run folder (config.json, last.pt, best.pt, log)")
    en.add_argument("--resume", action="store_true", help="continue the run in --run with its own config")
    en.add_argument("--teacher", help="image checkpoint to distil (a run's best.pt or "
                    "checkpoints/<name>/checkpoint.pt)")
    en.add_argument("--enc-channels", help="student widths at 1/2, 1/4, 1/8 resolution (default 32,64,128)")
    en.add_argument("--enc-blocks", help="student residual blocks per scale (default 0,0,1)")
    _schedule_flags(en, steps=16000, lr=5e-4, threads=1, eval_every=2000)
    en.set_defaults(func=cmd_train_encoder, command_name="train encoder")

    de = kinds.add_parser("decoder", help="retrain a registered image model's synthesis network on the codes its "
                          "encoder makes (strata export decoder registers it; the codes and streams stay the same)")
    de.add_argument("--data", required=True, help="folder with train/ (trained on) and val/ (chooses the checkpoint) "
                    "images; never Kodak")
    de.add_argument("--run", required=True, help="run folder (config.json, cached codes, last.pt, best.pt, log)")
    de.add_argument("--resume", action="store_true", help="continue the run in --run with its own config")
    de.add_argument("--model", help="the registered image model whose codes are decoded (required for a new run)")
    de.add_argument("--checkpoint", help="its training checkpoint, whose g_s the run starts from (required for a "
                    "new run; checkpoints/<name>/checkpoint.pt)")
    de.add_argument("--crop", type=int, help="code-grid cells per crop side, 8 pixels each (default 24)")
    _schedule_flags(de, steps=12000, lr=1e-4, threads=2, eval_every=1000)
    de.set_defaults(func=cmd_train_decoder, command_name="train decoder")

    cx = kinds.add_parser("context", help="learned context networks for a registered image model's entropy coder, "
                          "trained on the codes its encoder makes (strata export context registers them)")
    cx.add_argument("--data", required=True, help="folder with train/ (trained on) and val/ (reports and keeps a "
                    "layer's network only where it beats the table prior) images; never Kodak")
    cx.add_argument("--run", required=True, help="run folder (codes, one file per finished layer, report.json)")
    cx.add_argument("--model", help="the registered image model (required for a new run)")
    cx.add_argument("--resume", action="store_true", help="continue the run in --run, skipping finished layers")
    cx.add_argument("--epochs", type=int, help="passes over the training codes per layer (default 6)")
    cx.add_argument("--hidden", type=int, help="width of the two hidden layers (default 128)")
    cx.add_argument("--threads", type=int, help="torch threads (default 2)")
    cx.set_defaults(func=cmd_train_context, command_name="train context")
