"""The training run.

Writes into RUN: ``model.safetensors`` (the best epoch by validation balanced accuracy, written once when the run
ends, complete: NG threshold, test-time views, explanation method and tracker id), ``best.safetensors`` (the best
epoch's weights while it trains), ``resume.safetensors`` (the last epoch with optimizer state, for ``--resume``),
``config.json``, ``split.csv``, ``history.csv`` / ``history.json`` (one row per epoch) and ``training_curve.png``.
Every file is written atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from mieruka.augment import augment_with_masks
from mieruka.checkpoint import ModelInfo, load_checkpoint, read_info, save_checkpoint
from mieruka.config import TrainConfig
from mieruka.data.store import normalize
from mieruka.errors import MierukaError
from mieruka.inference import predict_logits, predict_probs, select_device
from mieruka.metrics import choose_threshold, classification_metrics, escape_bound, gate, ng_probability
from mieruka.models import build_model, check_backbone, feature_layer, load_pretrained, normalization_for
from mieruka.train.curves import plot_history, write_history
from mieruka.train.distributed import Ranks, from_env
from mieruka.train.final import TrackedAs, write_model
from mieruka.train.frozen import FrozenPrefix, freeze_stages, frozen_batchnorms
from mieruka.train.grouped_conv import GroupedConvDoubleBackward
from mieruka.train.guide import FineGuide, WithFeatures, guide_for, guide_loss
from mieruka.train.inputs import TrainingData, load_training_data
from mieruka.train.runs import BEST_FILE, prepare_run, resumed_config
from mieruka.train.state import (
    lr_factor,
    optimizer_tensors,
    param_groups,
    restore_optimizer,
    rounded,
    sampling_weights,
    tta_candidates,
)

__all__ = ["TrainResult", "train"]


@dataclass(frozen=True)
class TrainResult:
    """Where a run's outputs are, and its best validation figures."""

    run_dir: Path
    model_path: Path
    best_epoch: int
    best_val_balanced_accuracy: float
    history: tuple[dict[str, float], ...]


class _Trainer:
    """The model, its optimizer and schedule, and the run's progress; one :meth:`epoch` at a time."""

    def __init__(self, cfg: TrainConfig, data: TrainingData, run: Path, device: torch.device, ranks: Ranks):
        self.cfg, self.data, self.run, self.device, self.ranks = cfg, data, run, device, ranks
        num_classes = len(data.dataset.classes)
        self.mean, self.std = normalization_for(cfg.arch)
        model = build_model(cfg.arch, num_classes, image_size=cfg.image_size, output_stride=cfg.output_stride)
        if cfg.pretrained != "none":
            load_pretrained(model, cfg.arch, cfg.pretrained)
        self.frozen_bn = frozen_batchnorms(model, set(freeze_stages(model, cfg.freeze_stages)))
        self.target_layer = feature_layer(model)
        model.to(device).to(memory_format=torch.channels_last)
        self.model = model
        self.guide, self.guide_head = guide_for(model, cfg, data.guide)
        base = model if self.guide is None else WithFeatures(model)  # the guided step needs the features too
        fine = self.guide is not None and cfg.guide_fine > 0
        if fine and ranks.enabled:
            raise MierukaError("--guide-fine takes second-order gradients, which distributed training does not run")
        # On a CPU the frozen first modules run in slices, without autograd (the same numbers, faster: FrozenPrefix);
        # not under --guide-fine, whose maps need the gradient at a frozen stage.
        self.forward: Any = (FrozenPrefix.split(model) if device.type == "cpu" and not fine else None) or base
        if ranks.enabled:  # gradients averaged over the ranks in backward
            self.forward = DistributedDataParallel(base, device_ids=[device] if device.type == "cuda" else None)
        self.ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True) if cfg.ema_decay else None
        self.evaluated = self.ema.module if self.ema is not None else model  # the weights validated and saved
        self.fine = FineGuide(model) if fine else None  # after the EMA copy: its hooks stay on the trained model
        self.step_mode = GroupedConvDoubleBackward if fine else contextlib.nullcontext  # its maps' 2nd order
        self.optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)
        self.steps_per_epoch = max(1, len(data.train_idx) // cfg.batch_size)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.warmup = round(cfg.warmup_epochs * self.steps_per_epoch)
        counts = np.bincount(data.labels[data.train_idx], minlength=num_classes)
        self.class_weight = None
        if cfg.balance == "loss":
            self.class_weight = torch.tensor(counts.sum() / (num_classes * counts), dtype=torch.float32, device=device)
        self.weights = sampling_weights(data.labels[data.train_idx], num_classes, cfg.balance)
        self.gen = torch.Generator().manual_seed(cfg.seed)  # the sample of each epoch: the same on every rank
        # augmentation: the same generator in one process; its own per rank in a distributed run
        self.aug_gen = torch.Generator().manual_seed(cfg.seed * 1000 + ranks.rank + 1) if ranks.enabled else self.gen
        self.history: list[dict[str, float]] = []
        self.final: tuple[torch.nn.Module, ModelInfo] | None = None
        """The final model and its description, once :meth:`finish` made them."""
        self.best_score, self.best_epoch, self.start_epoch, self.done_steps = -1.0, 0, 1, 0

    def resume(self) -> None:
        """Continue from ``resume.safetensors``: weights, averaged weights, optimizer, random states, history."""
        resumed, _, saved = load_checkpoint(self.run / "resume.safetensors", self.device)
        meta = json.loads(saved["metadata"]["train_state"])
        self.model.load_state_dict(resumed.state_dict())
        if self.ema is not None:
            self.ema.module.load_state_dict(
                {k[len("_ema.") :]: v for k, v in saved["extra"].items() if k.startswith("_ema.")}
            )
        restore_optimizer(self.optimizer, saved["extra"], meta["param_groups"])
        self.gen.set_state(saved["extra"]["_rng.gen"])
        torch.set_rng_state(saved["extra"]["_rng.torch"])
        self.history = meta["history"]
        self.best_score, self.best_epoch, self.start_epoch = meta["best_score"], meta["best_epoch"], meta["epoch"] + 1
        self.done_steps = meta["step"]
        print(
            f"resuming {self.run} after epoch {meta['epoch']} "
            f"(best so far: epoch {self.best_epoch}, {self.best_score:.4f})"
        )

    def info(self, summary: dict[str, Any], threshold: float | None = None) -> ModelInfo:
        dataset = self.data.dataset
        return ModelInfo(
            arch=self.cfg.arch,
            classes=dataset.classes,
            verdicts=dict(dataset.verdicts),
            image_size=self.cfg.image_size,
            output_stride=self.cfg.output_stride,
            mean=self.mean,
            std=self.std,
            target_layer=self.target_layer,
            ng_threshold=threshold,
            bit_depth=self.cfg.bit_depth,
            config=self.cfg.to_dict(),
            summary=summary,
        )

    def fit(self, progress: bool) -> None:
        """Run the epochs left, with early stopping, saving the best and the resume state after each."""
        cfg = self.cfg
        # With last_epoch = n - 1 the scheduler starts at step n (it takes one step on construction).
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, self.total_steps, self.warmup), last_epoch=self.done_steps - 1
        )
        for epoch in range(self.start_epoch, cfg.epochs + 1):
            stale = bool(self.best_epoch and cfg.patience and epoch - self.best_epoch > cfg.patience)
            if self.ranks.agree(stale):  # rank 0 validates, so it decides
                print(f"early stop: no better validation balanced accuracy for {cfg.patience} epochs")
                break
            t0 = time.perf_counter()
            train_loss = self.ranks.mean(self._train_epoch(epoch, progress))
            if self.ranks.main:
                self._validate(epoch, train_loss, time.perf_counter() - t0)
                self._save_resume(epoch)
            self.ranks.barrier()

    def _train_epoch(self, epoch: int, progress: bool) -> float:
        cfg, data, device = self.cfg, self.data, self.device
        self.model.train()
        for module in self.frozen_bn:
            module.eval()
        draws = self.steps_per_epoch * cfg.batch_size
        if cfg.balance in ("sampler", "sqrt"):
            order = torch.multinomial(self.weights, draws, replacement=True, generator=self.gen)
        else:
            order = torch.randperm(len(data.train_idx), generator=self.gen)[:draws]
        losses = []
        steps, desc = range(self.steps_per_epoch), f"epoch {epoch}/{cfg.epochs}"
        bar = tqdm(steps, desc=desc, disable=not progress, leave=False, unit="step")
        use_amp = device.type == "cuda"
        ranks = self.ranks
        for step in bar:
            batch = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            pick = data.train_idx[batch[ranks.rank :: ranks.world].numpy()]  # this rank's share of the batch
            x = data.store.get(pick).to(device, non_blocking=True).float().div_(255)
            marked, masks = self.guide.batch(pick) if self.guide is not None else (None, None)
            x, masks = augment_with_masks(x, masks, cfg.augment, self.aug_gen)
            x = normalize(x, self.mean, self.std).contiguous(memory_format=torch.channels_last)
            y = torch.from_numpy(data.labels[pick]).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp), self.step_mode():
                logits, features = self._logits_features(x)
            loss = F.cross_entropy(logits.float(), y, weight=self.class_weight, label_smoothing=cfg.label_smoothing)
            if marked is not None and bool(marked.any()):
                assert features is not None and masks is not None and self.guide_head is not None
                on = marked.to(device)
                guided = guide_loss(self.model, features[on], self.guide_head, y[on], masks[on])
                loss = loss + cfg.guide_weight * guided
                if self.fine is not None:
                    loss = loss + cfg.guide_fine * self.fine.loss(logits, y, on, masks[on])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update(self.model, step=self.scheduler.last_epoch)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        return float(np.mean(losses))

    def _logits_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The batch's logits, and (guided runs only) the ``forward_features`` output the guide loss needs."""
        if self.guide is None:
            return self.forward(x), None
        if isinstance(self.forward, FrozenPrefix):
            return self.forward.with_features(x)
        return self.forward(x)

    def _validate(self, epoch: int, train_loss: float, seconds: float) -> None:
        """Validate the averaged weights, log the epoch, and save them as the model when they are the best."""
        data = self.data
        self.evaluated.eval()
        logits_val = predict_logits(self.evaluated, data.store, data.val_idx.tolist(), mean=self.mean, std=self.std)
        y_val = data.labels[data.val_idx]
        val_loss = float(F.cross_entropy(torch.from_numpy(logits_val), torch.from_numpy(y_val)))
        metrics = classification_metrics(y_val, logits_val.argmax(1), data.dataset.classes)
        row = {
            "epoch": epoch,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_accuracy": metrics["accuracy"],
            "val_balanced_accuracy": metrics["balanced_accuracy"],
            "seconds": seconds,
        }
        self.history.append(row)
        score = metrics["balanced_accuracy"]
        improved = score > self.best_score or (
            score == self.best_score and val_loss < self.history[self.best_epoch - 1]["val_loss"]
        )
        if improved:
            self.best_score, self.best_epoch = score, epoch
            summary = {"best_epoch": epoch, **rounded(row)}
            save_checkpoint(self.run / BEST_FILE, self.evaluated, self.info(summary))
        tqdm.write(
            f"epoch {epoch:>3}  loss {row['train_loss']:.4f}  val loss {val_loss:.4f}  "
            f"val acc {row['val_accuracy']:.4f}  val bal acc {score:.4f}  {row['seconds']:.0f}s"
            + ("  *best" if improved else "")
        )
        write_history(self.history, self.run)

    def _save_resume(self, epoch: int) -> None:
        opt_tensors, groups_json = optimizer_tensors(self.optimizer)
        if self.ema is not None:
            opt_tensors.update({f"_ema.{k}": v for k, v in self.ema.module.state_dict().items()})
        state = {
            "epoch": epoch,
            "step": epoch * self.steps_per_epoch,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "param_groups": groups_json,
        }
        save_checkpoint(
            self.run / "resume.safetensors",
            self.model,
            self.info({}),
            extra={**opt_tensors, "_rng.gen": self.gen.get_state(), "_rng.torch": torch.get_rng_state()},
            extra_meta={"train_state": json.dumps(state)},
        )

    def finish(self) -> tuple[torch.nn.Module, ModelInfo]:
        """The final model: the best epoch's weights, its test-time views and the NG threshold chosen on the
        validation split (a run started before ``best.safetensors`` existed kept them in ``model.safetensors``)."""
        cfg, data = self.cfg, self.data
        best_file = self.run / BEST_FILE
        best, _, _ = load_checkpoint(best_file if best_file.is_file() else self.run / "model.safetensors", self.device)
        best = best.to(memory_format=torch.channels_last)
        y_val = data.labels[data.val_idx]
        tta_scores: dict[str, float] = {}
        probs_by_tta: dict[str, np.ndarray] = {}
        for tta in tta_candidates(cfg):
            probs_by_tta[tta] = predict_probs(
                best, data.store, data.val_idx.tolist(), mean=self.mean, std=self.std, tta=tta
            )
            tta_scores[tta] = classification_metrics(y_val, probs_by_tta[tta].argmax(1), data.dataset.classes)[
                "balanced_accuracy"
            ]
        chosen = max(tta_scores, key=lambda k: (tta_scores[k], -list(tta_scores).index(k)))
        verdicts, classes = data.dataset.verdicts, data.dataset.classes
        is_ng = np.array([verdicts[classes[i]] == "NG" for i in y_val])
        info = self.info(
            {
                "best_epoch": self.best_epoch,
                **rounded(self.history[self.best_epoch - 1]),
                "train_images": len(data.train_idx),
                "val_images": len(data.val_idx),
                "val_balanced_accuracy_by_tta": {k: round(v, 6) for k, v in tta_scores.items()},
            }
        )
        probs, ng = probs_by_tta[chosen], info.ng_classes
        predicted_ng = np.isin(probs.argmax(1), ng)
        threshold = choose_threshold(ng_probability(probs, ng), is_ng, cfg.max_escape, predicted_ng)
        info.summary["val_escape_bound"] = escape_bound(
            int((is_ng & ~gate(probs, ng, threshold)).sum()), int(is_ng.sum())
        )
        return best, replace(self.info(info.summary, threshold), tta=chosen)


def train(
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: TrainConfig | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    tracker: str = "none",
) -> TrainResult:
    """Train a classifier on ``data`` and write the run into ``out``.

    Args:
        data: Class-per-folder tree or manifest CSV.
        out: Run folder (created; one that holds files is refused unless ``resume`` or ``overwrite``).
        config: Training configuration (defaults when None). With ``resume``: the run's saved one is used, and a
            given ``config`` must equal it except for a longer ``epochs`` (which extends the run), ``device`` and
            ``cache_gb`` (:mod:`mieruka.train.runs`).
        resume: Continue the interrupted run in ``out`` from its last finished epoch.
        overwrite: Replace the run in ``out``.
        progress: Show progress bars.
        tracker: Record the run in ``mlflow`` or ``tensorboard`` (:mod:`mieruka.tracking`) once it is written.
    """
    run = Path(out)
    if resume and overwrite:
        raise MierukaError("--resume and --overwrite: choose one (continue the run, or start it again)")
    cfg = resumed_config(run, config) if resume else config or TrainConfig()
    check_backbone(cfg.arch, cfg.output_stride)  # a wrong --arch or --output-stride before any image is read
    ranks = from_env()
    device = ranks.device(select_device(cfg.device))
    ranks.start(device)
    try:
        with ranks.quiet_unless_main():
            trainer = _run(data, run, cfg, device, ranks, resume=resume, overwrite=overwrite, progress=progress)
    finally:
        ranks.stop()
    if ranks.main:
        assert trainer.final is not None
        write_model(run, cfg, trainer.history, trainer.final, TrackedAs(data, tracker, progress))
    return TrainResult(
        run_dir=run,
        model_path=run / "model.safetensors",
        best_epoch=trainer.best_epoch,
        best_val_balanced_accuracy=trainer.best_score,
        history=tuple(trainer.history),
    )


def _run(
    data: str | os.PathLike[str],
    run: Path,
    cfg: TrainConfig,
    device: torch.device,
    ranks: Ranks,
    *,
    resume: bool,
    overwrite: bool,
    progress: bool,
) -> _Trainer:
    """The run on this rank: rank 0 prepares the folder and decodes (or caches) the images first, the others
    follow; every rank trains; rank 0 writes the curve and the final model."""
    if ranks.main:
        prepare_run(run, resume=resume, overwrite=overwrite)
    torch.manual_seed(cfg.seed)
    expected = read_info(run / "resume.safetensors").classes if resume else None
    training_data = None
    if ranks.main:
        training_data = load_training_data(data, run, cfg, progress, expected)
    ranks.barrier()  # a disk cache rank 0 wrote is reused by the others
    if training_data is None:
        training_data = load_training_data(data, run, cfg, False, expected, write=False)
    trainer = _Trainer(cfg, training_data, run, device, ranks)
    if resume:
        trainer.resume()
    trainer.fit(progress and ranks.main)
    if ranks.main:
        plot_history(trainer.history, run / "training_curve.png")
        trainer.final = trainer.finish()
    ranks.barrier()
    return trainer
