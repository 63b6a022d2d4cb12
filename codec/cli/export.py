"""``strata export image | audio | int8 | encoder | prior | context | vocoder``: trained checkpoints to served
ONNX models (needs the ``train`` extra).

``export image`` and ``export audio`` write ``<models>/<name>/`` (ONNX graphs, codebooks, priors)
and register the model in ``<models>/manifest.json``; ``--checkpoints DIR`` also keeps a compact
training checkpoint in ``DIR/<name>/`` (not served). ``export vocoder`` writes ``vocoder.onnx``
and ``vocoder.pt`` to a folder that ``export audio --vocoder`` takes; ``export audio`` without
``--checkpoint`` gives a registered model that new vocoder and leaves its streams valid. ``export int8``
and ``export encoder`` add a faster synthesis or analysis network to a registered image model, again
leaving its weights hash and streams valid. ``export prior`` refits an image model's entropy prior on the
codes its RD-optimised encoder produces and registers the result under a new name (streams depend on the
prior; the original model stays); ``export context`` does the same with the learned context networks of a
``strata train context`` run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from strata.cli.common import MODEL_NAME, CliError, positive


def _models(args: argparse.Namespace) -> Path:
    from strata.registry import default_models_dir

    return Path(args.models) if args.models else default_models_dir()


def _check_name(name: str) -> None:
    if not MODEL_NAME.fullmatch(name):
        raise CliError(f"--name must be 1 to 64 letters, digits, '.', '_' or '-' (a folder name and the "
                       f"model name in its streams), starting with a letter or digit; got {name!r}")


def cmd_export_image(args: argparse.Namespace) -> int:
    _check_name(args.name)
    positive("--layers", args.layers)
    from strata.export.image import export_image_model

    models = _models(args)
    try:
        entry = export_image_model(Path(args.checkpoint), args.name, Path(args.data), models, args.description,
                                   layers=args.layers, checkpoints_dir=args.checkpoints,
                                   make_default=not args.no_default)
    except (FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from None
    print(f"exported {entry.name} ({entry.weights_sha256[:16]}, {entry.quantizer}) to {models}")
    return 0


def cmd_export_audio(args: argparse.Namespace) -> int:
    _check_name(args.name)
    positive("--layers", args.layers)
    from strata.export.audio import export_audio_model, replace_vocoder, set_default_vocoder

    models = _models(args)
    if args.default_refine is not None and args.set_default_vocoder is None:
        raise CliError("--default-refine goes with --set-default-vocoder")
    if args.set_default_vocoder is not None:
        others = [flag for flag, given in (("--vocoder", args.vocoder), ("--vocoders-from", args.vocoders_from),
                                           ("--checkpoint", args.checkpoint), ("--default-vocoder",
                                           args.default_vocoder), ("--data", args.data),
                                           ("--layers", args.layers), ("--no-default", args.no_default)) if given]
        if others:
            raise CliError(f"--set-default-vocoder changes only the default of a registered model; "
                           f"drop {', '.join(others)}")
        try:
            entry = set_default_vocoder(models, args.name, args.set_default_vocoder, args.default_refine)
        except (FileNotFoundError, ValueError) as e:
            raise CliError(str(e)) from None
        refine = entry.extra.get("refine", {}).get(entry.extra["vocoder"])
        print(f"{entry.name} now decodes with {entry.extra['vocoder']}"
              f"{'' if refine is None else f' and {refine} refinement iterations'} when no vocoder is asked for "
              f"({models}); its files, weights hash and streams are unchanged")
        return 0
    if (args.vocoder is None) == (args.vocoders_from is None):
        raise CliError("give --vocoder DIR, or --vocoders-from MODEL with --checkpoint")
    if args.checkpoint is None:  # only the vocoder changes; streams of the model stay valid
        if args.vocoders_from is not None:
            raise CliError("--vocoders-from applies when exporting a new codec (with --checkpoint)")
        if args.layers is not None or args.data is not None or args.no_default:
            raise CliError("--layers, --data and --no-default need --checkpoint (installing a vocoder keeps the "
                           "model's codec)")
        try:
            entry = replace_vocoder(models, args.name, Path(args.vocoder), args.description or None,
                                    checkpoints_dir=args.checkpoints, make_default=args.default_vocoder)
        except (FileNotFoundError, ValueError) as e:
            raise CliError(str(e)) from None
        default = entry.extra.get("vocoder", "hifigan")
        print(f"installed the vocoder in {entry.name} ({models}; default vocoder: {default}); its weights hash "
              "and streams are unchanged")
        return 0
    if args.default_vocoder:
        raise CliError("--default-vocoder applies when adding a vocoder to a registered model (without --checkpoint)")
    if args.data is None:
        raise CliError("strata export audio --checkpoint needs --data (the training sounds the priors are fitted on)")
    try:
        entry = export_audio_model(Path(args.checkpoint), Path(args.vocoder) if args.vocoder else None, args.name,
                                   Path(args.data), models, args.description, layers=args.layers,
                                   checkpoints_dir=args.checkpoints, make_default=not args.no_default,
                                   vocoders_from=args.vocoders_from)
    except (FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from None
    print(f"exported {entry.name} ({entry.weights_sha256[:16]}) to {models}")
    return 0


def cmd_export_int8(args: argparse.Namespace) -> int:
    positive("--crops", args.crops)
    from strata.export.int8 import export_int8_synthesis

    models = _models(args)
    try:
        entry = export_int8_synthesis(models, args.name, Path(args.calibration), crops=args.crops)
    except (FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from None
    kept = ", ".join(entry.extra["synthesis_int8"]["float_nodes"])
    print(f"wrote {entry.files['synthesis_int8'].path} for {entry.name} (left in float: {kept}); "
          "its weights hash and streams are unchanged")
    return 0


def cmd_export_encoder(args: argparse.Namespace) -> int:
    from strata.export.encoder import export_light_analysis

    models = _models(args)
    try:
        entry = export_light_analysis(Path(args.checkpoint), models, args.name, checkpoints_dir=args.checkpoints)
    except (FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from None
    info = entry.extra["analysis_light"]
    print(f"wrote {entry.files['analysis_light'].path} for {entry.name} (widths {info['enc_channels']}, blocks "
          f"{info['enc_blocks']}); its weights hash and streams are unchanged")
    return 0


def cmd_export_prior(args: argparse.Namespace) -> int:
    _check_name(args.as_name)
    positive("--rounds", args.rounds)
    if args.rdo_lambda is not None and not args.rdo_lambda > 0:
        raise CliError(f"--rdo-lambda must be > 0, got {args.rdo_lambda}")
    from strata.export.prior import refit_prior

    models = _models(args)
    try:
        entry = refit_prior(models, args.name, args.as_name, Path(args.data), rounds=args.rounds,
                            rdo_lambda=args.rdo_lambda, schedule=args.schedule, make_default=args.default,
                            description=args.description)
    except (FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from None
    print(f"registered {entry.name} ({entry.weights_sha256[:16]}): {args.name}'s networks with a prior refitted on "
          f"its codes at rdo_lambda {entry.extra['rdo_lambda']:g}; {args.name} and its streams are unchanged")
    return 0


def cmd_export_context(args: argparse.Namespace) -> int:
    _check_name(args.as_name)
    from strata.export.context import export_context

    models = _models(args)
    try:
        entry = export_context(Path(args.run), models, args.as_name, make_default=args.default,
                               description=args.description)
    except (FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from None
    info = entry.extra["context_model"]
    print(f"registered {entry.name} ({entry.weights_sha256[:16]}): {info['from']} with context networks on layers "
          f"{info['layers_with_network']}; {info['from']} and its streams are unchanged")
    return 0


def cmd_export_decoder(args: argparse.Namespace) -> int:
    _check_name(args.as_name)
    from strata.export.decoder import export_decoder

    models = _models(args)
    try:
        entry = export_decoder(Path(args.run), models, args.as_name, make_default=args.default,
                               description=args.description)
    except (FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from None
    info = entry.extra["synthesis_retrained"]
    print(f"registered {entry.name} ({entry.weights_sha256[:16]}): {info['from']} with the synthesis network of "
          f"step {info['step']}; same codes and bytes, {info['from']} and its streams are unchanged "
          f"(strata export int8 --name {entry.name} adds its int8 network)")
    return 0


def cmd_export_vocoder(args: argparse.Namespace) -> int:
    from strata.export.vocoder import export_vocoder

    out = Path(args.out)
    try:
        export_vocoder(Path(args.checkpoint), out)
    except (FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from None
    print(f"exported vocoder.onnx and vocoder.pt to {out}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    x = sub.add_parser("export", help="export a checkpoint to ONNX + priors + manifest entry (torch)")
    kinds = x.add_subparsers(dest="exporter", required=True,
                             metavar="{image,audio,int8,encoder,prior,context,decoder,vocoder}")

    im = kinds.add_parser("image", help="an image codec checkpoint → <models>/<name>/")
    im.add_argument("--checkpoint", required=True, help="training checkpoint (a run's best.pt)")
    im.add_argument("--name", required=True, help="model name in the manifest and in its streams")
    im.add_argument("--data", required=True, help="folder with train/ and val/ images, for fitting the priors")
    im.add_argument("--layers", type=int, help="ship only the first N layers (default: all; a two-scale model "
                    "keeps all its top layers)")
    im.add_argument("--checkpoints", type=Path, help="also keep a compact training checkpoint in DIR/<name>/")
    im.add_argument("--description", default="")
    im.add_argument("--no-default", action="store_true",
                    help="register the model without making it the default image model")
    im.set_defaults(func=cmd_export_image, command_name="export image")

    au = kinds.add_parser("audio", help="a mel codec checkpoint + an exported vocoder → <models>/<name>/")
    au.add_argument("--vocoder", help="folder holding vocoder.onnx (from strata export vocoder)")
    au.add_argument("--vocoders-from", metavar="MODEL", help="with --checkpoint, instead of --vocoder: share the "
                    "vocoder files (and default vocoder) of this registered audio model, without copying them")
    au.add_argument("--name", required=True, help="model name in the manifest and in its streams")
    au.add_argument("--checkpoint", help="mel codec training checkpoint; without it, the vocoder is installed in "
                    "the registered model NAME (a HiFi-GAN one replaces its vocoder, a Vocos one is added or "
                    "replaced beside it)")
    au.add_argument("--default-vocoder", action="store_true",
                    help="without --checkpoint: make the installed vocoder the model's default")
    au.add_argument("--set-default-vocoder", choices=["hifigan", "vocos", "griffinlim"],
                    help="alone with --name: decode with this vocoder of the registered model when a caller names "
                    "none (chosen on held-out clips: bench/vocoder_codec.py)")
    au.add_argument("--default-refine", type=int, metavar="N",
                    help="with --set-default-vocoder: that network's default mel-consistency iterations (0..32)")
    au.add_argument("--no-default", action="store_true",
                    help="with --checkpoint: register the model without making it the default audio model")
    au.add_argument("--data", help="folder with <set>/train/ sounds, for fitting the priors (with --checkpoint)")
    au.add_argument("--layers", type=int, help="ship only the first N residual layers (default: all)")
    au.add_argument("--checkpoints", type=Path,
                    help="also keep the compact codec checkpoint and vocoder.pt in DIR/<name>/")
    au.add_argument("--description", default="")
    au.set_defaults(func=cmd_export_audio, command_name="export audio")

    i8 = kinds.add_parser("int8", help="an int8 synthesis network for a registered image or audio model (same streams)")
    i8.add_argument("--name", required=True, help="the registered image or audio model")
    i8.add_argument("--calibration", required=True,
                    help="training data that sets the activation ranges, never the evaluation set: a folder of "
                    "images, or for an audio model the folder with <set>/train/ sounds (held-out clips are skipped)")
    i8.add_argument("--crops", type=int, default=16,
                    help="calibration crops of 256×256, or clips (their first 6 s) for an audio model (default 16)")
    i8.set_defaults(func=cmd_export_int8, command_name="export int8")

    en = kinds.add_parser("encoder", help="a distilled light analysis network for a registered image model "
                          "(same decoder, valid streams)")
    en.add_argument("--checkpoint", required=True, help="checkpoint of strata train encoder (its run's best.pt)")
    en.add_argument("--name", required=True, help="the registered image model it was distilled from")
    en.add_argument("--checkpoints", type=Path, help="also keep the student's float16 weights in "
                    "DIR/<name>/analysis_light.pt")
    en.set_defaults(func=cmd_export_encoder, command_name="export encoder")

    pr = kinds.add_parser("prior", help="a registered image model with its entropy prior refitted on the codes its "
                          "RD-optimised encoder produces, as a new model")
    pr.add_argument("--name", required=True, help="the registered image model")
    pr.add_argument("--as", dest="as_name", required=True, help="name of the new model (streams carry it)")
    pr.add_argument("--data", required=True, help="folder with train/ (fitted on) and val/ (chooses contexts and "
                    "smoothing) images; never Kodak")
    pr.add_argument("--rounds", type=int, default=2, help="encode-and-refit rounds (default 2)")
    pr.add_argument("--rdo-lambda", type=float, help="λ of the encoder's search (default: the model's)")
    pr.add_argument("--schedule", choices=("flat", "energy"), default="flat",
                    help="per-layer λ: flat (the model's), or energy (scaled by the residual each layer refines)")
    pr.add_argument("--default", action="store_true", help="make the new model the default image model")
    pr.add_argument("--description", help="manifest description (default: the model's, with a note)")
    pr.set_defaults(func=cmd_export_prior, command_name="export prior")

    cx = kinds.add_parser("context", help="a registered image model with the context networks of a strata train "
                          "context run, as a new model")
    cx.add_argument("--run", required=True, help="the finished strata train context run")
    cx.add_argument("--as", dest="as_name", required=True, help="name of the new model (streams carry it)")
    cx.add_argument("--default", action="store_true", help="make the new model the default image model")
    cx.add_argument("--description", help="manifest description (default: the model's, with a note)")
    cx.set_defaults(func=cmd_export_context, command_name="export context")

    de = kinds.add_parser("decoder", help="a registered image model with the synthesis network of a strata train "
                          "decoder run, as a new model (same codes and bytes)")
    de.add_argument("--run", required=True, help="the strata train decoder run (its best.pt)")
    de.add_argument("--as", dest="as_name", required=True, help="name of the new model (streams carry it)")
    de.add_argument("--default", action="store_true", help="make the new model the default image model")
    de.add_argument("--description", help="manifest description (default: the model's, with a note)")
    de.set_defaults(func=cmd_export_decoder, command_name="export decoder")

    vo = kinds.add_parser("vocoder", help="a HiFi-GAN or Vocos checkpoint → vocoder.onnx + vocoder.pt")
    vo.add_argument("--checkpoint", required=True, help="vocoder training checkpoint (a run's best.pt)")
    vo.add_argument("--out", required=True, help="output folder")
    vo.set_defaults(func=cmd_export_vocoder, command_name="export vocoder")
