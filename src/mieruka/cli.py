"""The ``mieruka`` command. Each subcommand is a thin shell over one library function."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from mieruka import __version__

__all__ = ["main"]

# Training options whose command-line flags map one to one onto TrainConfig fields.
_TRAIN_OPTIONS = [
    "arch",
    "pretrained",
    "image_size",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "patience",
    "balance",
    "freeze_stages",
    "ema_decay",
    "seed",
    "split_seed",
    "device",
    "cache_gb",
    "max_escape",
]


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _cmd_synth(args: argparse.Namespace) -> None:
    from mieruka.data.synth import write_dataset

    result = write_dataset(
        args.out, args.per_class, seed=args.seed, size=args.size, names=args.names, progress=not args.quiet
    )
    print(
        f"wrote {result.images} images of {len(result.classes)} classes to {result.root} "
        f"(masks in {result.root / 'masks'}, list in {result.manifest})"
    )


def _cmd_train(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from mieruka.config import TrainConfig
    from mieruka.data.dataset import describe, load_dataset
    from mieruka.train import train

    if args.resume:
        result = train(args.data, args.out, resume=True, progress=not args.quiet)
    else:
        base = TrainConfig.from_file(args.config) if args.config else TrainConfig()
        given = {k: getattr(args, k) for k in _TRAIN_OPTIONS if getattr(args, k) is not None}
        if args.ok:
            given["ok_classes"] = tuple(args.ok)
        if args.skip_bad:
            given["skip_bad"] = True
        if args.no_rot90 or args.no_flip:
            aug = base.augment
            given["augment"] = replace(
                aug,
                rot90=aug.rot90 and not args.no_rot90,
                hflip=aug.hflip and not args.no_flip,
                vflip=aug.vflip and not args.no_flip,
            )
        cfg = replace(base, **given)
        from mieruka.models import check_arch

        check_arch(cfg.arch)
        dataset = load_dataset(args.data, ok_classes=cfg.ok_classes or None, split_seed=cfg.split_seed)
        print(describe(dataset))
        result = train(args.data, args.out, cfg, progress=not args.quiet)
    print(f"best epoch {result.best_epoch}: validation balanced accuracy {result.best_val_balanced_accuracy:.4f}")
    print(
        f"model: {result.model_path}\nlogs: {result.run_dir / 'history.csv'}, {result.run_dir / 'training_curve.png'}"
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from mieruka.evaluate import evaluate

    ev = evaluate(
        args.model,
        args.data,
        args.out,
        split=args.split,
        max_escape=args.max_escape,
        device=args.device,
        progress=not args.quiet,
    )
    m = ev.metrics
    print(
        f"{m['split']}: {m['images']} images  accuracy {m['accuracy']:.4f}  balanced accuracy "
        f"{m['balanced_accuracy']:.4f}"
    )
    for c, pc in m["per_class"].items():
        print(
            f"  {c:<24} precision {pc['precision']:.3f}  recall {pc['recall']:.3f}  f1 {pc['f1']:.3f}  "
            f"n={pc['support']}"
        )
    g = m["gate_at_threshold"]
    print(f"OK/NG by predicted class: escape {_fmt(m['escape_rate'])}  overkill {_fmt(m['overkill_rate'])}")
    print(
        f"OK/NG at NG threshold {m['threshold']:.4f} (chosen on {m['threshold_chosen_on']} for escape <= "
        f"{m['max_escape']}): escape {_fmt(g['escape_rate'])}  overkill {_fmt(g['overkill_rate'])}"
    )
    print(f"results: {ev.out_dir / 'metrics.json'}, {ev.out_dir / 'confusion_matrix.png'}")


def _cmd_predict(args: argparse.Namespace) -> None:
    from mieruka.predict import predict

    results = predict(
        args.model, args.inputs, out=args.out, threshold=args.threshold, device=args.device, progress=not args.quiet
    )
    if args.out is None:
        for r in results:
            print(f"{r.image}\t{r.label}\t{r.probability:.4f}\t{r.verdict}")
    else:
        ng = sum(r.verdict == "NG" for r in results)
        print(f"{len(results)} images: {len(results) - ng} OK, {ng} NG; written to {args.out}")


def _cmd_info(args: argparse.Namespace) -> None:
    import json
    from dataclasses import asdict

    from mieruka.checkpoint import read_info

    print(json.dumps(asdict(read_info(args.model)), indent=2, ensure_ascii=False))


def _cmd_archs(args: argparse.Namespace) -> None:
    import timm

    for name in timm.list_models(args.filter or "*"):
        print(name)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="mieruka",
        description="Explainable visual inspection: train a defect classifier on part images, evaluate it per class "
        "and as an OK/NG gate, and see why it decides.",
    )
    parser.add_argument("--version", action="version", version=f"mieruka {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "synth",
        help="write a synthetic defect data set with exact masks",
        description="Write a procedural inspection data set: textured surfaces with planted "
        "scratches, cracks, blowholes and dirt, as ROOT/<class>/*.png with masks in ROOT/masks/.",
    )
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--per-class", type=int, default=60, help="images per class (default 60)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    p.add_argument("--names", choices=("en", "ja"), default="en", help="English or Japanese class names")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser(
        "train",
        help="fine-tune a classifier on a data set",
        description="Fine-tune an ImageNet-pretrained classifier on DATA (a class-per-folder tree "
        "ROOT/<class>/**/<image> or a manifest CSV image,label[,mask][,split]). Writes RUN/model."
        "safetensors (best epoch by validation balanced accuracy), logs, the split and a curve.",
    )
    p.add_argument("data", type=Path, help="class-per-folder tree or manifest CSV")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument(
        "--config",
        type=Path,
        help="JSON or TOML file of training options (names as in RUN/config.json); "
        "options given on the command line win",
    )
    p.add_argument("--arch", help="timm architecture (default tf_efficientnet_lite0; `mieruka archs` lists them)")
    p.add_argument("--pretrained", help="imagenet (default), none, or a .safetensors file of timm weights")
    p.add_argument("--image-size", type=int, help="input side in pixels (default 224)")
    p.add_argument("--epochs", type=int, help="maximum epochs (default 25)")
    p.add_argument("--batch-size", type=int, help="default 32")
    p.add_argument("--lr", type=float, help="peak learning rate (default 5e-4)")
    p.add_argument("--weight-decay", type=float, help="default 0.02")
    p.add_argument("--patience", type=int, help="early stopping patience in epochs (default 8, 0 = off)")
    p.add_argument("--balance", choices=("sqrt", "sampler", "loss", "none"), help="class balancing (default sqrt)")
    p.add_argument("--freeze-stages", type=int, help="feature stages kept frozen (default 2)")
    p.add_argument("--ema-decay", type=float, help="weight averaging decay (default 0.998, 0 = off)")
    p.add_argument("--seed", type=int, help="seed of training (default 0)")
    p.add_argument("--split-seed", type=int, help="seed of the split when the data gives none (default 0)")
    p.add_argument(
        "--ok",
        action="append",
        metavar="CLASS",
        help="a class that passes (repeatable); default: classes named ok/good/free/normal…/正常/良品",
    )
    p.add_argument("--max-escape", type=float, help="escape-rate target of the stored NG threshold (default 0)")
    p.add_argument("--cache-gb", type=float, help="cache decoded images up to this size (default 4)")
    p.add_argument("--no-rot90", action="store_true", help="no 90° rotations (for parts with a fixed orientation)")
    p.add_argument("--no-flip", action="store_true", help="no flips")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images (listed) instead of stopping")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "evaluate",
        help="per-class and OK/NG metrics on a split",
        description="Evaluate MODEL on one split of DATA: accuracy, balanced accuracy, per-class "
        "precision/recall/F1, confusion matrix, escape and overkill rates, and an NG threshold chosen "
        "on the validation split. Writes DIR/metrics.json, predictions.csv, confusion_matrix.png.",
    )
    p.add_argument("model", type=Path, help="model .safetensors")
    p.add_argument("data", type=Path, help="class-per-folder tree or manifest CSV")
    p.add_argument("--split", default="test", choices=("train", "val", "test", "all"), help="default test")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--max-escape", type=float, default=0.0, help="escape-rate target for the threshold (default 0)")
    _add_common(p)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser(
        "predict",
        help="class, probability and verdict of images",
        description="Classify images (files or folders, searched recursively).",
    )
    p.add_argument("model", type=Path, help="model .safetensors")
    p.add_argument("inputs", nargs="+", type=Path, metavar="IMAGE_OR_DIR")
    p.add_argument("--out", type=Path, help="write a CSV here (else print a table)")
    p.add_argument("--threshold", type=float, help="NG-probability threshold (default: the model's)")
    _add_common(p)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser(
        "info",
        help="print a model file's description",
        description="Print the description stored in a model file as JSON: architecture, classes, "
        "verdict map, input size, normalization, explanation layer, NG threshold, training "
        "configuration and summary. Checks the file's integrity on the way.",
    )
    p.add_argument("model", type=Path, help="model .safetensors written by mieruka train")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser(
        "archs",
        help="list timm architectures",
        description="List the timm architecture names that --arch accepts. Offline ImageNet weights "
        "exist for tf_efficientnet_lite0/1/2; the others train with --pretrained none or weights you "
        "give as a .safetensors file.",
    )
    p.add_argument("filter", nargs="?", help="wildcard filter, e.g. 'resnet*'")
    p.set_defaults(func=_cmd_archs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 on success, 2 on a usage or data error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as exc:  # MierukaError is a ValueError
        if args.debug:
            traceback.print_exc()
        print(f"mieruka {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
