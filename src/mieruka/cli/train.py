"""``mieruka train``: fine-tune a classifier on a data set."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mieruka.cli._common import add_layout, add_tracker
from mieruka.tta import TRAIN_TTA_CHOICES

__all__ = ["register", "run"]

# Training options whose command-line flags map one to one onto TrainConfig fields.
_TRAIN_OPTIONS = [
    "arch",
    "pretrained",
    "image_size",
    "output_stride",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "patience",
    "balance",
    "freeze_stages",
    "ema_decay",
    "tta",
    "seed",
    "split_seed",
    "layout",
    "device",
    "cache_gb",
    "cache",
    "max_escape",
    "bit_depth",
    "guide",
    "guide_weight",
    "guide_fine",
    "explain_method",
    "corrections",
    "add_records",
    "record_files",
]


def register(sub: Any) -> None:
    from mieruka.config import BALANCE_CHOICES, TrainConfig

    d = TrainConfig()  # the defaults the help texts name

    p = sub.add_parser(
        "train",
        help="fine-tune a classifier on a data set",
        description="Fine-tune an ImageNet-pretrained classifier on DATA (a class-per-folder tree "
        "ROOT/<class>/**/<image>, a split-first tree ROOT/{train,val,test}/<class>/<image>, an MVTec AD category, "
        "or a manifest CSV image,label[,mask][,split]). Writes RUN/model."
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
    p.add_argument("--arch", help=f"timm architecture (default {d.arch}; `mieruka archs` lists them)")
    p.add_argument("--pretrained", help="imagenet (default), none, or a .safetensors file of timm weights")
    p.add_argument("--image-size", type=int, help=f"input side in pixels (default {d.image_size})")
    p.add_argument("--epochs", type=int, help=f"maximum epochs (default {d.epochs})")
    p.add_argument("--batch-size", type=int, help=f"default {d.batch_size}")
    p.add_argument("--lr", type=float, help=f"peak learning rate (default {d.lr:g})")
    p.add_argument("--weight-decay", type=float, help=f"default {d.weight_decay:g}")
    p.add_argument("--patience", type=int, help=f"early stopping patience in epochs (default {d.patience}, 0 = off)")
    p.add_argument("--balance", choices=BALANCE_CHOICES, help=f"class balancing (default {d.balance})")
    p.add_argument("--freeze-stages", type=int, help=f"feature stages kept frozen (default {d.freeze_stages})")
    p.add_argument(
        "--ema-decay",
        type=float,
        help=f"upper bound on the weight-averaging decay (default {d.ema_decay:g}, 0 = off); in short runs timm's "
        "warm-up sets it",
    )
    p.add_argument(
        "--tta",
        choices=TRAIN_TTA_CHOICES,
        help="test-time augmentation stored with the model: none (default), flip, d4, or auto (picked on val)",
    )
    p.add_argument("--seed", type=int, help=f"seed of training (default {d.seed})")
    p.add_argument(
        "--split-seed", type=int, help=f"seed of the split when the data gives none (default {d.split_seed})"
    )
    add_layout(p)
    add_tracker(p, run_id=False)
    p.add_argument(
        "--ok",
        action="append",
        metavar="CLASS",
        help="a class that passes (repeatable); default: classes named ok/good/free/normal…/正常/良品",
    )
    p.add_argument(
        "--max-escape", type=float, help=f"escape-rate target of the stored NG threshold (default {d.max_escape:g})"
    )
    _add_pixels_and_cache(p, d)
    _add_explanation(p)
    p.add_argument("--no-rot90", action="store_true", help="no 90° rotations (for parts with a fixed orientation)")
    p.add_argument("--no-flip", action="store_true", help="no flips")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images (listed) instead of stopping")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run in --out (with its options; a larger --epochs extends it)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out (refused otherwise)")
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _add_pixels_and_cache(p: argparse.ArgumentParser, d: Any) -> None:
    from mieruka.config import CACHE_CHOICES

    p.add_argument(
        "--bit-depth",
        type=int,
        choices=(10, 12, 14, 16),
        help="significant bits of 16-bit images, e.g. 12 for a 12-bit camera (default: the container's 16); "
        "stored in the model and applied by every command and the service",
    )
    p.add_argument(
        "--cache",
        choices=CACHE_CHOICES,
        help="where the decoded images are kept: auto (default: RAM up to --cache-gb, else disk), ram, or disk (a "
        "file in ~/.cache/mieruka/images or $MIERUKA_CACHE_DIR, reused while the images are unchanged)",
    )
    p.add_argument("--cache-gb", type=float, help=f"RAM budget of --cache auto in GiB (default {d.cache_gb:g})")


def _add_explanation(p: argparse.ArgumentParser) -> None:
    from mieruka.config import GUIDE_CHOICES, OUTPUT_STRIDES, TrainConfig

    d = TrainConfig()

    p.add_argument(
        "--output-stride",
        type=int,
        choices=OUTPUT_STRIDES,
        help="input pixels per cell of the heatmap: 32 (the backbone as pretrained), or 16 / 8 (its last stages "
        f"dilated: a finer map, same weights; default {d.output_stride})",
    )
    p.add_argument(
        "--corrections",
        metavar="DECISIONS_CSV",
        help="apply a review's decisions (mieruka review's decisions.csv) before training: relabels, exclusions, "
        "wrong regions dropped; recorded in RUN/config.json",
    )
    p.add_argument(
        "--add-records",
        metavar="URL",
        help="with --corrections: add the line's recorded images that the decisions label (record:ID; serve "
        "--record URL kept them) to the training split only; recorded in RUN/config.json",
    )
    p.add_argument(
        "--record-files",
        metavar="DIR",
        help="with --add-records postgresql://…: the folder of the record's kept images (serve --record-files DIR)",
    )
    p.add_argument(
        "--guide",
        choices=GUIDE_CHOICES,
        help="masks: also penalise the Grad-CAM energy outside the marked region of NG training images that have a "
        "mask or box file, so the model learns to look at the defect; auto (default): masks where they exist and "
        "the head allows it, labels alone otherwise; none: labels alone (docs/benchmarks-history.md#guide)",
    )
    p.add_argument(
        "--guide-weight",
        type=float,
        help=f"weight of the --guide loss beside the cross-entropy (default {d.guide_weight:g})",
    )
    p.add_argument(
        "--guide-fine",
        type=float,
        help="experimental: weight of a second guide term, the LayerCAM maps of the finer multi-scale stages "
        "outside the marked region; second-order gradients, several times slower (default 0: off; "
        "docs/benchmarks-history.md#guide)",
    )
    p.add_argument(
        "--explain-method",
        help="the explanation stored with the model for explain, export, serve and the Python API: auto (default: "
        "chosen on the validation split's regions by average precision among the maps the exported graph computes, "
        "so the line shows what the audit measured; Grad-CAM where it has none), auto-all (among every candidate, "
        "earlier layers too), or a method spec such as gradcam or layercam:multiscale/mean",
    )


def _config(args: argparse.Namespace) -> Any:
    """The training configuration: the ``--config`` file's (or the defaults; with ``--resume`` the run's own),
    overridden by the given options."""
    from dataclasses import replace

    from mieruka.config import TrainConfig

    saved = args.out / "config.json"
    if args.config:
        base = TrainConfig.from_file(args.config)
    elif args.resume and saved.is_file():
        base = TrainConfig.from_file(saved)
    else:
        base = TrainConfig()
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
    return replace(base, **given)


def run(args: argparse.Namespace) -> None:
    from mieruka.train import train

    cfg = _config(args)
    from mieruka.train.distributed import from_env

    result = train(
        args.data,
        args.out,
        cfg,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.quiet,
        tracker=args.tracker,
    )
    if not from_env().main:  # under torchrun, rank 0 reports the run
        return
    print(f"best epoch {result.best_epoch}: validation balanced accuracy {result.best_val_balanced_accuracy:.4f}")
    print(
        f"model: {result.model_path}\nlogs: {result.run_dir / 'history.csv'}, {result.run_dir / 'training_curve.png'}"
    )
