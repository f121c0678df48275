"""Fine-tune a classifier on an inspection data set: ``mieruka train DATA --out RUN``.

Writes into RUN: ``model.safetensors`` (the best epoch by validation balanced accuracy), ``resume.safetensors``
(the last epoch with optimizer state, for ``--resume``), ``config.json``, ``split.csv``, ``history.csv`` /
``history.json`` (one row per epoch) and ``training_curve.png``. Every file is written atomically.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from timm.utils import ModelEmaV3
from torch import nn
from tqdm.auto import tqdm

from mieruka._io import write_csv, write_json
from mieruka.augment import augment_batch
from mieruka.checkpoint import ModelInfo, load_checkpoint, save_checkpoint
from mieruka.config import TrainConfig
from mieruka.data.annotations import ANNOTATION_EXTENSIONS, read_region
from mieruka.data.dataset import Sample, load_dataset
from mieruka.data.images import image_size
from mieruka.data.store import BadFile, ImageStore, normalize, scan_images
from mieruka.errors import DataError, MierukaError
from mieruka.inference import cpu_chunked, predict_logits, predict_probs, select_device
from mieruka.metrics import choose_threshold, classification_metrics, ng_probability
from mieruka.models import build_model, feature_layer, load_pretrained, normalization_for

__all__ = ["TrainResult", "train"]

HISTORY_FIELDS = ("epoch", "lr", "train_loss", "val_loss", "val_accuracy", "val_balanced_accuracy", "seconds")


@dataclass(frozen=True)
class TrainResult:
    """Where a run's outputs are, and its best validation figures."""

    run_dir: Path
    model_path: Path
    best_epoch: int
    best_val_balanced_accuracy: float
    history: tuple[dict[str, float], ...]


def _freeze_stages(model: nn.Module, stages: int) -> list[str]:
    """Freeze every parameter before the ``stages``-th feature stage of timm's ``feature_info``.

    That is the stem and the first ``stages`` stages: the high-resolution layers whose backward pass costs the most
    and whose ImageNet edge detectors need no retraining. Returns the frozen parameter names.
    """
    if stages <= 0:
        return []
    modules = [i["module"] for i in getattr(model, "feature_info", None) or []]
    if len(modules) < 2:
        raise MierukaError("--freeze-stages: this architecture publishes no feature stages; use --freeze-stages 0")
    boundary = modules[min(stages, len(modules) - 1)] + "."
    names = [n for n, _ in model.named_parameters()]
    cut = next((i for i, n in enumerate(names) if n.startswith(boundary)), len(names))
    frozen = set(names[:cut])
    for name, param in model.named_parameters():
        param.requires_grad_(name not in frozen)
    return names[:cut]


def _frozen_modules(model: nn.Module, frozen: set[str]) -> list[nn.Module]:
    """Modules all of whose parameters are frozen: their BatchNorm statistics stay fixed too (eval mode)."""
    out: list[nn.Module] = []
    for name, module in model.named_modules():
        params = [f"{name}.{p}" if name else p for p, _ in module.named_parameters()]
        if params and all(p in frozen for p in params) and isinstance(module, nn.modules.batchnorm._BatchNorm):
            out.append(module)
    return out


class _FrozenPrefix:
    """The frozen modules a timm classifier runs first, and the rest of it, as two functions.

    With frozen stages and frozen BatchNorm statistics, the first modules are a fixed function of each image: on a
    CPU they run without autograd in slices of :data:`~mieruka.inference.CPU_PIXELS_PER_PASS` pixels, which this
    cache-bound hardware runs faster than one pass of the whole batch (BENCHMARKS.md §1g). The trainable rest runs
    on the whole batch, so its BatchNorm statistics are those of the batch, as before. Slices of equal size give the
    very numbers of one pass (at 256 px a batch of 32 runs as 8 slices of 4); a slice of a single image may take
    another kernel and differ in the last digits.
    """

    def __init__(self, prefix: list[nn.Module], rest: list[nn.Module], model: nn.Module) -> None:
        self.prefix, self.rest, self.model = prefix, rest, model

    @classmethod
    def split(cls, model: nn.Module) -> _FrozenPrefix | None:
        """Split ``model`` at its first module with a parameter that requires grad (``_freeze_stages`` sets them),
        or None where that cannot be done exactly: no frozen module first, a random layer or a BatchNorm without
        weights among the frozen ones, or a forward pass that is not the modules in order followed by
        ``forward_head`` (checked on a random batch)."""
        head = {id(m) for m in (model.get_classifier(), getattr(model, "global_pool", None))}  # type: ignore[operator]

        def trainable(module: nn.Module) -> bool:
            return any(p.requires_grad for p in module.parameters())

        sequence: list[nn.Module] = []

        def flatten(module: nn.Module) -> None:
            for child in module.children():
                if id(child) in head:
                    continue
                mixed = trainable(child) and any(not p.requires_grad for p in child.parameters())
                if isinstance(child, nn.Sequential) and mixed:  # a stage container holding both: look inside
                    flatten(child)
                else:
                    sequence.append(child)

        flatten(model)
        cut = next((i for i, m in enumerate(sequence) if trainable(m)), len(sequence))
        prefix, rest = sequence[:cut], sequence[cut:]
        if not any(True for m in prefix for _ in m.parameters()):
            return None
        dropouts = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
        for module in (m for p in prefix for m in p.modules()):
            drop_path = float(getattr(module, "drop_prob", 0.0) or 0.0)  # timm's DropPath
            if isinstance(module, dropouts) or drop_path > 0:
                return None
            # BatchNorm without weights is not frozen by train(): in training it would use each slice's statistics
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(True for _ in module.parameters()):
                return None
        split = cls(prefix, rest, model)
        was_training = model.training
        try:
            model.eval()
            param = next(model.parameters())
            x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(param.device)
            with torch.no_grad():
                same = torch.allclose(split.rest_forward(split.prefix_forward(x)), model(x), rtol=1e-5, atol=1e-6)
        except (RuntimeError, TypeError, ValueError):
            same = False
        finally:
            model.train(was_training)
        return split if same else None

    def prefix_forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.prefix:
            x = module(x)
        return x

    def rest_forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.rest:
            x = module(x)
        return self.model.forward_head(x)  # type: ignore[operator]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = cpu_chunked(self.prefix_forward, x.device)(x)
        return self.rest_forward(features)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for _name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 1 % of the peak."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _sampling_weights(labels: np.ndarray, num_classes: int, balance: str) -> torch.Tensor:
    """Per-image draw weights: class shares ∝ n_c (none/loss), √n_c (sqrt) or 1 (sampler)."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    power = {"sampler": 1.0, "sqrt": 0.5}.get(balance, 0.0)
    return torch.tensor(counts[labels] ** -power, dtype=torch.double)


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    state = opt.state_dict()
    tensors = {}
    for idx, slots in state["state"].items():
        for key, value in slots.items():
            tensors[f"_opt.{idx}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors, json.dumps(state["param_groups"])


def _restore_optimizer(opt: torch.optim.Optimizer, extra: dict[str, torch.Tensor], groups_json: str) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in extra.items():
        if name.startswith("_opt."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": json.loads(groups_json)})


def _plot_history(history: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mieruka._io import atomic_write

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax1.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    ax1.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax1.legend()
    ax2.plot(epochs, [h["val_accuracy"] for h in history], "o-", label="accuracy")
    ax2.plot(epochs, [h["val_balanced_accuracy"] for h in history], "o-", label="balanced accuracy")
    ax2.set(xlabel="epoch", ylim=(0, 1.02), title="Validation")
    ax2.legend(loc="lower right")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


def _mask_problems(samples: Sequence[Sample], sizes: Sequence[tuple[int, int]], bad_images: set[Path]) -> list[BadFile]:
    """Masks that are missing, unreadable, or of another size than their image, and box annotations that cannot be
    read or do not fit their image (both files named)."""
    problems = []
    for sample, (h, w) in zip(samples, sizes, strict=True):
        if sample.mask is None or sample.image in bad_images:
            continue
        if sample.mask.suffix.lower() in ANNOTATION_EXTENSIONS:  # boxes: parse them, check them against the image
            try:
                read_region(sample.mask, sample.image, (h, w))
            except DataError as exc:
                problems.append(BadFile(sample.image, f"its annotation: {exc}"))
            continue
        try:
            mw, mh = image_size(sample.mask)
        except DataError as exc:
            problems.append(BadFile(sample.image, f"its mask: {exc}"))
            continue
        if (mh, mw) != (h, w):
            problems.append(
                BadFile(
                    sample.image,
                    f"its mask {sample.mask} is {mw}×{mh} pixels but the image is "
                    f"{w}×{h}; a mask must have exactly the size of its image",
                )
            )
    return problems


def _preflight(
    samples: Sequence[Sample],
    sizes: Sequence[tuple[int, int]],
    unreadable: Sequence[BadFile],
    cfg: TrainConfig,
    run: Path,
) -> set[Path]:
    """Stop (or, with ``skip_bad``, report) before training when any image or mask of any split cannot be used."""
    bad = [*unreadable, *_mask_problems(samples, sizes, {b.path for b in unreadable})]
    if not bad:
        return set()
    listing = "\n".join(f"  {b.path}: {b.reason}" for b in bad[:20])
    more = f"\n  … and {len(bad) - 20} more" if len(bad) > 20 else ""
    write_csv(run / "bad_images.csv", ("image", "reason"), [(str(b.path), b.reason) for b in bad])
    if not cfg.skip_bad:
        raise DataError(
            f"{len(bad)} image(s) cannot be used; nothing was trained (list in {run / 'bad_images.csv'}):\n"
            f"{listing}{more}\nFix or remove them, or pass --skip-bad to train without them."
        )
    print(f"skipping {len(bad)} image(s) that cannot be used (--skip-bad):\n{listing}{more}")
    return {b.path for b in bad}


def train(
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: TrainConfig | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train a classifier on ``data`` and write the run into ``out``.

    Args:
        data: Class-per-folder tree or manifest CSV.
        out: Run folder (created).
        config: Training configuration (defaults when None). With ``resume`` the run's saved one is used.
        resume: Continue the interrupted run in ``out`` from its last finished epoch.
        progress: Show progress bars.
    """
    run = Path(out)
    if resume:
        cfg_path = run / "config.json"
        if not (run / "resume.safetensors").is_file() or not cfg_path.is_file():
            raise MierukaError(f"--resume: {run} holds no interrupted run (no resume.safetensors and config.json)")
        cfg = TrainConfig.from_dict(json.loads(cfg_path.read_text(encoding="utf-8"))["config"])
    else:
        cfg = config or TrainConfig()
    run.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(cfg.seed)
    device = select_device(cfg.device)
    dataset = load_dataset(data, ok_classes=cfg.ok_classes or None, split_seed=cfg.split_seed)
    train_samples, val_samples = dataset.split("train"), dataset.split("val")
    missing = [c for c in dataset.classes if not any(s.label == c for s in train_samples)]
    if missing:
        raise DataError(f"{data}: class(es) {', '.join(missing)} have no training image")
    if not val_samples:
        raise DataError(f"{data}: the validation split is empty; the best epoch cannot be chosen")

    write_json(run / "config.json", {"data": str(data), "config": cfg.to_dict()})
    dataset.save_split(run / "split.csv")

    samples = train_samples + val_samples
    store = ImageStore(
        [s.image for s in samples], cfg.image_size, cache_bytes=int(cfg.cache_gb * (1 << 30)), progress=progress
    )
    # Test images are not trained on, but a bad one would only surface at evaluation: check them now, uncached.
    test_samples = dataset.split("test")
    _, test_sizes, test_bad = scan_images(
        [s.image for s in test_samples], cfg.image_size, keep=False, desc="checking test images", progress=progress
    )
    bad = _preflight([*samples, *test_samples], [*store.sizes, *test_sizes], [*store.bad, *test_bad], cfg, run)
    train_idx = np.array([i for i, s in enumerate(train_samples) if s.image not in bad], dtype=np.int64)
    val_idx = np.array([len(train_samples) + i for i, s in enumerate(val_samples) if s.image not in bad])
    labels = np.array([dataset.label_index(s) for s in samples], dtype=np.int64)
    num_classes = len(dataset.classes)

    mean, std = normalization_for(cfg.arch)
    model = build_model(cfg.arch, num_classes)
    if cfg.pretrained != "none":
        load_pretrained(model, cfg.arch, cfg.pretrained)
    frozen = set(_freeze_stages(model, cfg.freeze_stages))
    frozen_bn = _frozen_modules(model, frozen)
    target_layer = feature_layer(model)
    model.to(device).to(memory_format=torch.channels_last)
    # On a CPU the frozen first modules run in slices, without autograd (the same numbers, faster: _FrozenPrefix).
    forward = (_FrozenPrefix.split(model) if device.type == "cpu" else None) or model
    ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True) if cfg.ema_decay else None
    evaluated = ema.module if ema is not None else model  # the weights that are validated and saved

    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr)
    steps_per_epoch = max(1, len(train_idx) // cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    counts = np.bincount(labels[train_idx], minlength=num_classes)
    class_weight = None
    if cfg.balance == "loss":
        class_weight = torch.tensor(counts.sum() / (num_classes * counts), dtype=torch.float32, device=device)
    weights = _sampling_weights(labels[train_idx], num_classes, cfg.balance)
    gen = torch.Generator().manual_seed(cfg.seed)

    history: list[dict[str, float]] = []
    best_score, best_epoch, start_epoch = -1.0, 0, 1
    done_steps = 0
    if resume:
        resumed, _, saved = load_checkpoint(run / "resume.safetensors", device)
        meta = json.loads(saved["metadata"]["train_state"])
        model.load_state_dict(resumed.state_dict())
        if ema is not None:
            ema.module.load_state_dict(
                {k[len("_ema.") :]: v for k, v in saved["extra"].items() if k.startswith("_ema.")}
            )
        _restore_optimizer(optimizer, saved["extra"], meta["param_groups"])
        gen.set_state(saved["extra"]["_rng.gen"])
        torch.set_rng_state(saved["extra"]["_rng.torch"])
        history = meta["history"]
        best_score, best_epoch, start_epoch = meta["best_score"], meta["best_epoch"], meta["epoch"] + 1
        done_steps = meta["step"]
        print(f"resuming {run} after epoch {meta['epoch']} (best so far: epoch {best_epoch}, {best_score:.4f})")
    # With last_epoch = n - 1 the scheduler starts at step n (it takes one step on construction).
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _lr_factor(s, total_steps, warmup), last_epoch=done_steps - 1
    )

    def info_for(summary: dict[str, Any], threshold: float | None = None) -> ModelInfo:
        return ModelInfo(
            arch=cfg.arch,
            classes=dataset.classes,
            verdicts=dict(dataset.verdicts),
            image_size=cfg.image_size,
            mean=mean,
            std=std,
            target_layer=target_layer,
            ng_threshold=threshold,
            config=cfg.to_dict(),
            summary=summary,
        )

    use_amp = device.type == "cuda"
    for epoch in range(start_epoch, cfg.epochs + 1):
        if best_epoch and cfg.patience and epoch - best_epoch > cfg.patience:
            print(f"early stop: no better validation balanced accuracy for {cfg.patience} epochs")
            break
        t0 = time.perf_counter()
        model.train()
        for module in frozen_bn:
            module.eval()
        draws = steps_per_epoch * cfg.batch_size
        if cfg.balance in ("sampler", "sqrt"):
            order = torch.multinomial(weights, draws, replacement=True, generator=gen)
        else:
            order = torch.randperm(len(train_idx), generator=gen)[:draws]
        losses = []
        bar = tqdm(
            range(steps_per_epoch), desc=f"epoch {epoch}/{cfg.epochs}", disable=not progress, leave=False, unit="step"
        )
        for step in bar:
            pick = train_idx[order[step * cfg.batch_size : (step + 1) * cfg.batch_size].numpy()]
            x = store.get(pick).to(device, non_blocking=True).float().div_(255)
            x = augment_batch(x, cfg.augment, gen)
            x = normalize(x, mean, std).contiguous(memory_format=torch.channels_last)
            y = torch.from_numpy(labels[pick]).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = forward(x)
            loss = F.cross_entropy(logits.float(), y, weight=class_weight, label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update(model, step=scheduler.last_epoch)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")

        evaluated.eval()
        logits_val = predict_logits(evaluated, store, val_idx.tolist(), mean=mean, std=std)
        y_val = labels[val_idx]
        val_loss = float(F.cross_entropy(torch.from_numpy(logits_val), torch.from_numpy(y_val)))
        metrics = classification_metrics(y_val, logits_val.argmax(1), dataset.classes)
        row = {
            "epoch": epoch,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": float(np.mean(losses)),
            "val_loss": val_loss,
            "val_accuracy": metrics["accuracy"],
            "val_balanced_accuracy": metrics["balanced_accuracy"],
            "seconds": time.perf_counter() - t0,
        }
        history.append(row)
        score = metrics["balanced_accuracy"]
        improved = score > best_score or (score == best_score and val_loss < history[best_epoch - 1]["val_loss"])
        if improved:
            best_score, best_epoch = score, epoch
            save_checkpoint(run / "model.safetensors", evaluated, info_for({"best_epoch": epoch, **_rounded(row)}))
        tqdm.write(
            f"epoch {epoch:>3}  loss {row['train_loss']:.4f}  val loss {val_loss:.4f}  "
            f"val acc {row['val_accuracy']:.4f}  val bal acc {score:.4f}  {row['seconds']:.0f}s"
            + ("  *best" if improved else "")
        )
        write_csv(run / "history.csv", HISTORY_FIELDS, [[h[k] for k in HISTORY_FIELDS] for h in history])
        write_json(run / "history.json", history)
        opt_tensors, groups_json = _optimizer_tensors(optimizer)
        if ema is not None:
            opt_tensors.update({f"_ema.{k}": v for k, v in ema.module.state_dict().items()})
        state = {
            "epoch": epoch,
            "step": epoch * steps_per_epoch,
            "best_score": best_score,
            "best_epoch": best_epoch,
            "history": history,
            "param_groups": groups_json,
        }
        save_checkpoint(
            run / "resume.safetensors",
            model,
            info_for({}),
            extra={**opt_tensors, "_rng.gen": gen.get_state(), "_rng.torch": torch.get_rng_state()},
            extra_meta={"train_state": json.dumps(state)},
        )

    _plot_history(history, run / "training_curve.png")
    # Final model: the best epoch's weights, with the NG threshold calibrated on the validation split.
    best, _, _ = load_checkpoint(run / "model.safetensors", device)
    best = best.to(memory_format=torch.channels_last)
    y_val = labels[val_idx]
    tta_scores: dict[str, float] = {}
    probs_by_tta: dict[str, np.ndarray] = {}
    for tta in _tta_candidates(cfg):
        probs_by_tta[tta] = predict_probs(best, store, val_idx.tolist(), mean=mean, std=std, tta=tta)
        tta_scores[tta] = classification_metrics(y_val, probs_by_tta[tta].argmax(1), dataset.classes)[
            "balanced_accuracy"
        ]
    chosen = max(tta_scores, key=lambda k: (tta_scores[k], -list(tta_scores).index(k)))
    probs = probs_by_tta[chosen]
    is_ng = np.array([dataset.verdicts[dataset.classes[i]] == "NG" for i in labels[val_idx]])
    info = info_for(
        {
            "best_epoch": best_epoch,
            **_rounded(history[best_epoch - 1]),
            "train_images": len(train_idx),
            "val_images": len(val_idx),
            "val_balanced_accuracy_by_tta": {k: round(v, 6) for k, v in tta_scores.items()},
        }
    )
    threshold = choose_threshold(ng_probability(probs, info.ng_classes), is_ng, cfg.max_escape)
    save_checkpoint(run / "model.safetensors", best, replace(info_for(info.summary, threshold), tta=chosen))
    return TrainResult(
        run_dir=run,
        model_path=run / "model.safetensors",
        best_epoch=best_epoch,
        best_val_balanced_accuracy=best_score,
        history=tuple(history),
    )


def _tta_candidates(cfg: TrainConfig) -> list[str]:
    """Test-time views worth trying: only those the training augmentation taught the model to see."""
    if cfg.tta != "auto":
        return [cfg.tta]
    aug = cfg.augment
    out = ["none"]
    if aug.hflip:
        out.append("flip")
    if aug.hflip and aug.vflip and aug.rot90:
        out.append("d4")
    return out


def _rounded(row: dict[str, float]) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in row.items()}
