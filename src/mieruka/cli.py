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
    "tta",
    "seed",
    "split_seed",
    "device",
    "cache_gb",
    "max_escape",
]


def _add_tta(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tta",
        choices=("none", "flip", "d4"),
        help="test-time augmentation: average over flips (flip: 2 views) or flips and 90° turns (d4: 8 "
        "views); default: the model's, chosen on the validation split at training time",
    )


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
        tta=args.tta,
        neighbours=args.neighbours,
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
    if "neighbours" in m:
        n = m["neighbours"]
        sheet = f", {ev.out_dir / 'neighbours.png'}" if n["errors"] else ""
        print(
            f"nearest training images: {ev.out_dir / 'neighbours.csv'}{sheet}; of {n['errors']} misclassified images, "
            f"{n['errors_nearest_labelled_as_predicted']} have a nearest training image labelled as predicted "
            "(check those labels)"
        )


def _cmd_predict(args: argparse.Namespace) -> None:
    from mieruka.predict import predict

    model, inputs = (args.model, args.paths) if args.model else (args.paths[0], args.paths[1:])
    if not inputs:
        raise ValueError("give the model and at least one image or folder: mieruka predict MODEL IMAGE_OR_DIR...")
    results = predict(
        model,
        inputs,
        out=args.out,
        threshold=args.threshold,
        device=args.device,
        tta=args.tta,
        progress=not args.quiet,
    )
    if args.out is None:
        for r in results:
            print(f"{r.image}\t{r.label}\t{r.probability:.4f}\t{r.verdict}")
    else:
        ng = sum(r.verdict == "NG" for r in results)
        print(f"{len(results)} images: {len(results) - ng} OK, {ng} NG; written to {args.out}")


def _cmd_export(args: argparse.Namespace) -> None:
    from mieruka.export import export_onnx

    r = export_onnx(args.model, args.out, method=args.method, all_classes=args.all_classes, opset=args.opset)
    if r.method is None:
        print(
            "note: the model's head is not global average pooling + one linear layer, so the graph cannot compute "
            "a heatmap; exported class probabilities only"
        )
    diffs = f"probabilities {r.max_prob_diff:.1e}" + (
        f", maps {r.max_map_diff:.1e}" if r.max_map_diff is not None else ""
    )
    print(f"wrote {r.path} ({r.path.stat().st_size / 1e6:.1f} MB, {r.seconds:.0f} s): outputs {', '.join(r.outputs)}")
    print(f"checked with ONNX Runtime against PyTorch: largest difference {diffs}")


def _cmd_serve(args: argparse.Namespace) -> None:
    import os

    from mieruka.serve import serve

    serve(
        args.model,
        host=args.host,
        port=args.port,
        api_key=args.api_key or os.environ.get("MIERUKA_API_KEY") or None,
        method=args.method,
        device="cpu" if args.device == "auto" else args.device,
        max_upload_mb=args.max_upload_mb,
        max_images=args.max_images,
        threads=args.threads,
        workers=args.workers,
    )


def _cmd_explain(args: argparse.Namespace) -> None:
    from mieruka.explain.run import run_explain

    layers = [name for item in args.layer or [] for name in item.split(",") if name]
    run = run_explain(
        args.model,
        args.inputs,
        args.out,
        method=args.method,
        target=args.target,
        split=args.split,
        layers=layers or None,
        normalization=args.normalize,
        alpha=args.alpha,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.quiet,
    )
    m = run.manifest
    fast = sum(r["fast_path"] for r in m["images"])
    print(
        f"explained {len(m['images'])} images with {m['method']} on {', '.join(m['layers'])} "
        f"(target: {m['target']}; closed-form fast path for {fast})"
    )
    print(
        f"panels: {run.out_dir / 'panels'}; maps: {run.out_dir / 'maps.npz'}; manifest: {run.out_dir / 'manifest.json'}"
    )


def _cmd_audit(args: argparse.Namespace) -> None:
    from mieruka.audit.faithfulness import FaithfulnessConfig
    from mieruka.audit.run import AuditConfig, run_audit

    cfg = AuditConfig(tolerance=args.tolerance, threshold=args.threshold)
    methods = [m for m in args.method.split(",") if m]
    run = run_audit(
        args.model,
        args.data,
        args.out,
        split=args.split,
        methods=methods,
        target=args.target,
        config=cfg,
        device=args.device,
        batch_size=args.batch_size,
        lang=args.lang,
        boxes=args.boxes,
        faithfulness=args.faithfulness,
        faithfulness_config=FaithfulnessConfig(steps=args.steps, fill=args.fill),
        progress=not args.quiet,
    )
    print(f"{'method':<36}{'energy in':>10}{'lift':>8}{'pointing':>10}{'rank acc':>10}   (defect images; uniform)")
    for method, groups in run.summary["methods"].items():
        a = groups["all"]
        if a["with_region"]:
            u = a["baselines"]["uniform"]
            print(
                f"{method:<36}{a['energy_inside']:>10.3f}{a['lift']:>8.2f}{a['pointing_hit']:>10.3f}"
                f"{a['relevance_rank']:>10.3f}   ({u['energy_inside']:.3f}, {u['pointing_hit']:.3f})"
            )
        print(f"  categories: {a['categories']}")
        if "faithfulness" in a:
            f = a["faithfulness"]
            check = run.summary["faithfulness"]["randomization_check"][method]
            print(
                f"  faithfulness ({f['images']} images): deletion AUC {f['deletion_auc']:.3f}, insertion AUC "
                f"{f['insertion_auc']:.3f}, average drop {f['average_drop_percent']:.1f} %, increase "
                f"{f['increase_rate']:.2f}; randomization check: mean |rank correlation| "
                f"{check['mean_abs_rank_correlation']:.3f} ({'passed' if check['passed'] else 'FAILED'})"
            )
    print(
        f"results: {run.out_dir / 'audit.csv'}, {run.out_dir / 'summary.json'}, {run.out_dir / 'review.csv'}; "
        f"report: {run.out_dir / 'report' / 'index.html'}"
    )


def _cmd_report(args: argparse.Namespace) -> None:
    from mieruka.audit.report import rebuild_report

    print(f"report: {rebuild_report(args.dir, lang=args.lang)}")


def _cmd_methods(args: argparse.Namespace) -> None:
    from mieruka.explain import methods_table

    print(methods_table())


def _cmd_info(args: argparse.Namespace) -> None:
    import json
    from dataclasses import asdict

    from mieruka.checkpoint import read_info

    if args.model.suffix.lower() == ".onnx":
        from mieruka.runtime import OnnxModel

        m = OnnxModel(args.model)
        print(
            json.dumps(
                {**asdict(m.info), "onnx": {"method": m.method, "outputs": list(m.outputs)}},
                indent=2,
                ensure_ascii=False,
            )
        )
        return
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
    p.add_argument("--image-size", type=int, help="input side in pixels (default 256)")
    p.add_argument("--epochs", type=int, help="maximum epochs (default 26)")
    p.add_argument("--batch-size", type=int, help="default 32")
    p.add_argument("--lr", type=float, help="peak learning rate (default 1e-3)")
    p.add_argument("--weight-decay", type=float, help="default 0.02")
    p.add_argument("--patience", type=int, help="early stopping patience in epochs (default 8, 0 = off)")
    p.add_argument("--balance", choices=("sqrt", "sampler", "loss", "none"), help="class balancing (default sqrt)")
    p.add_argument("--freeze-stages", type=int, help="feature stages kept frozen (default 3)")
    p.add_argument(
        "--ema-decay",
        type=float,
        help="upper bound on the weight-averaging decay (default 0.998, 0 = off); in short runs timm's warm-up sets it",
    )
    p.add_argument(
        "--tta",
        choices=("auto", "none", "flip", "d4"),
        help="test-time augmentation stored with the model: none (default), flip, d4, or auto (picked on val)",
    )
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
    p.add_argument(
        "--neighbours",
        type=int,
        default=0,
        metavar="K",
        help="also list every image's K nearest training images in the model's features (neighbours.csv) and draw "
        "the misclassified ones beside theirs (neighbours.png); default 0 = off",
    )
    _add_tta(p)
    _add_common(p)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser(
        "predict",
        help="class, probability and verdict of images",
        description="Classify images (files or folders, searched recursively) with a .safetensors model (PyTorch) "
        "or a .onnx file from 'mieruka export' (ONNX Runtime on the CPU, same preprocessing). "
        "Usage: mieruka predict MODEL IMAGE_OR_DIR... or mieruka predict --model MODEL IMAGE_OR_DIR...",
    )
    p.add_argument("--model", type=Path, help="the model (.safetensors or .onnx), instead of the first argument")
    p.add_argument("paths", nargs="+", type=Path, metavar="[MODEL] IMAGE_OR_DIR")
    p.add_argument("--out", type=Path, help="write a CSV here (else print a table)")
    p.add_argument("--threshold", type=float, help="NG-probability threshold (default: the model's)")
    _add_tta(p)
    _add_common(p)
    p.set_defaults(func=_cmd_predict)

    from mieruka.explain.methods import METHODS
    from mieruka.export import EXPORT_METHODS

    p = sub.add_parser(
        "export",
        help="export a model to ONNX: class probabilities and heatmap in one graph",
        description="Write one self-contained ONNX file whose graph maps an image batch (dynamic batch size) to "
        "class probabilities and the heatmap of the predicted class, computed by the one-forward-pass CAM "
        "(no autograd needed at run time). Class names, verdicts, input size and normalization go into the "
        "file's metadata. The file is checked with ONNX Runtime against PyTorch before the command succeeds.",
    )
    p.add_argument("model", type=Path, help="model .safetensors written by mieruka train")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="output format (onnx)")
    p.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    p.add_argument(
        "--method",
        default="gradcam",
        choices=EXPORT_METHODS,
        help="CAM method computed in the graph (default gradcam)",
    )
    p.add_argument("--all-classes", action="store_true", help="also output every class's heatmap ('heatmaps')")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "serve",
        help="serve a model over HTTP with a web page",
        description="Serve a model (.onnx from 'mieruka export', run by ONNX Runtime, or .safetensors, run by "
        "PyTorch): POST /v1/predict (multipart field 'files', one or several images) returns class, "
        "probabilities, OK/NG verdict and the heatmap overlay as base64 PNG; GET /v1/model, GET /healthz; API "
        "docs at /docs; a web page at /. Oversized uploads get 413, non-images 415, corrupt images 422.",
    )
    p.add_argument("model", type=Path, metavar="MODEL_OR_ONNX", help="a .onnx or .safetensors model")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--api-key",
        help="require this key in the X-API-Key header for /v1/* (default: $MIERUKA_API_KEY, else none)",
    )
    p.add_argument(
        "--method",
        default="gradcam",
        choices=EXPORT_METHODS,
        help="CAM method for a .safetensors model (an .onnx file carries its own; default gradcam)",
    )
    p.add_argument("--max-upload-mb", type=float, default=32.0, help="largest request body in MiB (default 32)")
    p.add_argument("--max-images", type=int, default=16, help="most images per request (default 16)")
    p.add_argument(
        "--threads",
        type=int,
        help="ONNX Runtime threads per request (default: one per core, divided among the workers)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes, each with its own copy of the model (default 1; one per core serves many "
        "concurrent clients faster)",
    )
    p.add_argument("--device", default="auto", help="cpu or cuda for a .safetensors model (default cpu)")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser(
        "explain",
        help="heatmaps of where the evidence is, with the paper's input | heatmap panels",
        description="Explain predictions with a CAM-family heatmap (red = evidence, blue = none). By default: every "
        "validation image of DATA, the map of its true class, a panel captioned 'true: X / predicted: Y (p=…)'. "
        "Writes DIR/panels/*.png, DIR/maps.npz (raw float16 maps), DIR/grid.png and DIR/manifest.json. Methods: "
        + "; ".join(f"{n} ({c.paper})" for n, c in METHODS.items()),
    )
    p.add_argument("model", type=Path, help="model .safetensors")
    p.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="DATA_OR_IMAGES",
        help="a data set (folder tree of the model's classes or manifest CSV) or image files/folders",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--method", default="gradcam", choices=list(METHODS), help="default gradcam")
    p.add_argument(
        "--target",
        default="true",
        help="true (default), pred, ng (evidence for rejecting), all (every class) or a class name",
    )
    p.add_argument(
        "--split",
        default="val",
        choices=("train", "val", "test", "all"),
        help="split of a data set to explain (default val)",
    )
    p.add_argument(
        "--layer",
        action="append",
        metavar="NAME",
        help="module to explain (repeatable or comma-separated; several are fused); default: the last "
        "convolutional block",
    )
    p.add_argument(
        "--normalize",
        default="per-image",
        choices=("per-image", "fixed"),
        help="display scaling: per-image min–max, or one scale shared by all images",
    )
    p.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity in the overlay (default 0.5)")
    p.add_argument("--batch-size", type=int, default=16, help="images per batch (default 16)")
    _add_common(p)
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser(
        "audit",
        help="is the model looking at the defect? localization metrics, triage, review list, HTML report",
        description="For every image of a split and every method: the explained map at the original size, its "
        "localization against the defect mask (energy inside, lift over uniform, pointing game, relevance rank "
        "accuracy, average precision, IoU/Dice, fragmentation) beside chance baselines, and a triage category. "
        "Writes DIR/audit.csv, DIR/summary.json, DIR/review.csv and DIR/report/index.html.",
    )
    p.add_argument("model", type=Path, help="model .safetensors")
    p.add_argument("data", type=Path, help="data set with masks (folder tree or manifest CSV)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--split", default="test", choices=("train", "val", "test", "all"), help="default test")
    p.add_argument(
        "--method",
        default="layercam:multiscale/product,gradcam",
        help="comma-separated NAME[:LAYER+LAYER…][/mean|product]; the layer word multiscale means every stage from "
        "stride 8 down plus the last block; default: the recommended layercam:multiscale/product beside plain gradcam",
    )
    p.add_argument("--target", default="pred", help="pred (default), true, ng or a class name")
    p.add_argument("--tolerance", type=int, default=15, help="pointing-game tolerance in pixels (default 15)")
    p.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="fraction of the map's maximum above which pixels count for IoU/Dice/fragments (0.5)",
    )
    p.add_argument("--batch-size", type=int, default=16, help="images per batch (default 16)")
    p.add_argument("--lang", choices=("en", "ja"), default="en", help="language of the HTML report")
    p.add_argument(
        "--boxes",
        type=Path,
        help="box annotations to use as the defect regions: a COCO .json file (entries by image file name) or a "
        "folder of Pascal VOC <stem>.xml / YOLO <stem>.txt files (default: the data set's masks)",
    )
    p.add_argument(
        "--faithfulness",
        type=int,
        default=0,
        metavar="N",
        help="also measure faithfulness on N images spread over the split: deletion/insertion AUC, average "
        "drop/increase, and the model-randomization sanity check (default 0: off; costs about 2 × (steps + 1) "
        "forward passes per image and method)",
    )
    p.add_argument("--steps", type=int, default=16, help="deletion/insertion steps (default 16)")
    p.add_argument(
        "--fill",
        choices=("blur", "black", "mean"),
        default="blur",
        help="what deleted pixels become (default blur: a Gaussian blur, σ = 5 px at 224 px)",
    )
    _add_common(p)
    p.set_defaults(func=_cmd_audit)

    p = sub.add_parser(
        "report",
        help="write an audit's HTML report again (e.g. in Japanese)",
        description="Rebuild DIR/report/index.html from the files mieruka audit wrote in DIR (audit.csv, "
        "summary.json, review.csv, report/panels.json), reusing its panels; --lang ja for Japanese.",
    )
    p.add_argument("dir", type=Path, help="the audit's --out folder")
    p.add_argument("--lang", choices=("en", "ja"), default="en", help="language of the report (default en)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser(
        "methods",
        help="list the explanation methods (Markdown table)",
        description="Print the explanation methods mieruka implements as a Markdown table: name, "
        "paper, formula, whether it needs gradients and whether the one-forward-pass fast path "
        "applies on a global-average-pooling + linear head.",
    )
    p.set_defaults(func=_cmd_methods)

    p = sub.add_parser(
        "info",
        help="print a model file's description",
        description="Print the description stored in a model file as JSON: architecture, classes, "
        "verdict map, input size, normalization, explanation layer, NG threshold, training "
        "configuration and summary. Checks the file's integrity on the way.",
    )
    p.add_argument("model", type=Path, help="model .safetensors written by mieruka train, or .onnx by mieruka export")
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
