"""``mieruka audit MODEL DATA --split test --method gradcam,layercam --out DIR``: is the model looking at the defect?

For every image and method: the map of the explained target at the original image size, its localization metrics
against the ground-truth mask (:mod:`mieruka.audit.localization`), chance baselines, and one triage category. Writes

* ``DIR/audit.csv`` — one row per image and method;
* ``DIR/summary.json`` — per method and class: mean metrics beside the chance baselines, category counts;
* ``DIR/review.csv`` — images ranked by how much a human look is worth, each with its reasons.

Triage (thresholds in :class:`AuditConfig`): an image whose region is known is *on target* when the map's maximum
lies within ``tolerance`` pixels of the region (the pointing game); its attention is *fragmented* when at least
``min_fragments`` components exceed ``threshold`` × max and the largest holds under ``max_largest_share`` of their
mass. Categories: ``correct_on_target``, ``correct_off_target`` ("right for the wrong reason"),
``wrong_off_target``, ``wrong_fragmented``, ``wrong_on_target`` (class confusion) and ``no_region`` (no mask, or an
OK part without a defect).
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn
from tqdm.auto import tqdm

from mieruka import __version__
from mieruka._io import atomic_write, write_csv, write_json
from mieruka.audit.faithfulness import (
    FaithfulnessConfig,
    auc,
    average_drop_increase,
    deletion_insertion,
    rank_correlation,
)
from mieruka.audit.localization import (
    DEFAULT_THRESHOLD,
    POINTING_TOLERANCE,
    LocalizationScores,
    localization_scores,
)
from mieruka.audit.report import TEXT, write_report
from mieruka.checkpoint import ModelInfo, load_checkpoint
from mieruka.data.annotations import read_region
from mieruka.data.images import read_image
from mieruka.data.store import ImageStore, normalize
from mieruka.errors import DataError
from mieruka.explain.engine import Explanation, explain, multiscale_layers
from mieruka.explain.render import panel, to_original_size
from mieruka.explain.targets import TrueClass, parse_target
from mieruka.inference import select_device

__all__ = ["CATEGORIES", "AuditConfig", "AuditRun", "parse_method_spec", "run_audit", "triage"]

SCHEMA_VERSION = 1
CATEGORIES = (
    "correct_on_target",
    "correct_off_target",
    "wrong_off_target",
    "wrong_fragmented",
    "wrong_on_target",
    "no_region",
)
FAITHFULNESS_METRICS = ("deletion_auc", "insertion_auc", "average_drop", "confidence_increase", "randomization_rho")
METRICS = (
    "energy_inside",
    "lift",
    "pointing_hit",
    "relevance_rank",
    "average_precision",
    "iou",
    "dice",
    "components",
    "largest_component_share",
)


@dataclass(frozen=True)
class AuditConfig:
    """Thresholds of the audit (all documented in the module docstring)."""

    tolerance: int = POINTING_TOLERANCE
    threshold: float = DEFAULT_THRESHOLD
    min_fragments: int = 3
    max_largest_share: float = 0.5
    low_confidence: float = 0.6
    label_error_confidence: float = 0.9


@dataclass(frozen=True)
class AuditRun:
    """Where the audit wrote its files, and its summary."""

    out_dir: Path
    summary: dict[str, Any]


def triage(correct: bool, scores: LocalizationScores | None, cfg: AuditConfig) -> str:
    """The category of one image (see the module docstring)."""
    if scores is None:
        return "no_region"
    on = scores.pointing_hit
    fragmented = scores.components >= cfg.min_fragments and scores.largest_component_share < cfg.max_largest_share
    if correct:
        return "correct_on_target" if on else "correct_off_target"
    if on:
        return "wrong_on_target"
    return "wrong_fragmented" if fragmented else "wrong_off_target"


BASELINE_METRICS = ("energy_inside", "pointing_hit", "relevance_rank", "average_precision")


def _baselines(mask: np.ndarray, cfg: AuditConfig, rng: np.random.Generator) -> dict[str, dict[str, float]]:
    """What maps that know nothing score on this mask.

    ``uniform``: a flat map, in expectation (energy, rank accuracy and AP equal the area fraction; its pointing
    score is the chance that a random pixel lies within the tolerance of the region). ``random``: one seeded noise
    map. ``centre``: a bump at the image centre, the guess of a model that always looks at the middle.
    """
    h, w = mask.shape
    area = float(mask.mean())
    near = float((ndimage.distance_transform_edt(~mask) <= cfg.tolerance).mean())
    yy, xx = np.mgrid[0:h, 0:w]
    centre = 1.0 - np.hypot((yy - (h - 1) / 2) / h, (xx - (w - 1) / 2) / w) / np.sqrt(0.5)
    out = {"uniform": {"energy_inside": area, "pointing_hit": near, "relevance_rank": area, "average_precision": area}}
    for name, heat in (("random", rng.random((h, w))), ("centre", centre)):
        sc = localization_scores(heat, mask, tolerance=cfg.tolerance, threshold=cfg.threshold)
        out[name] = {k: float(getattr(sc, k)) for k in BASELINE_METRICS}
    return out


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def run_audit(
    model_path: str | os.PathLike[str],
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    split: str = "test",
    methods: Sequence[str] = ("gradcam",),
    target: str = "pred",
    config: AuditConfig | None = None,
    device: str = "auto",
    batch_size: int = 16,
    lang: str = "en",
    report: bool = True,
    boxes: str | os.PathLike[str] | None = None,
    faithfulness: int = 0,
    faithfulness_config: FaithfulnessConfig | None = None,
    progress: bool = True,
) -> AuditRun:
    """Audit the explanations of one split for one or more methods.

    Args:
        model_path: The ``.safetensors`` model.
        data: A data set with masks.
        out: Output folder.
        split: Split to audit.
        methods: Method specs, ``name`` or ``name:layer+layer`` (fused layers).
        target: What the maps explain: ``pred`` (the decision, default), ``true``, ``ng`` or a class name.
        config: Triage thresholds.
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: Images per explanation batch.
        lang: Language of the report (``en`` or ``ja``).
        report: Write ``report/index.html`` with panels.
        boxes: Box annotations to use as the regions instead of the data set's masks: a COCO JSON file (entries
            matched by image file name) or a folder of Pascal VOC ``<stem>.xml`` / YOLO ``<stem>.txt`` files.
            Images without an entry have no region.
        faithfulness: Also run the faithfulness checks (deletion/insertion, average drop/increase, model
            randomization; :mod:`mieruka.audit.faithfulness`) on this many images of the split, evenly spread
            (0: off; they cost about 2 × (steps + 1) forward passes per image and method).
        faithfulness_config: Steps, baseline fill and the randomization threshold.
        progress: Show progress bars.
    """
    if lang not in TEXT:
        raise ValueError(f"--lang {lang!r}: choose en or ja")
    cfg = config or AuditConfig()
    model, info, _ = load_checkpoint(model_path, select_device(device))
    ds = info.load_dataset(data)
    samples = ds.split(split)
    if not samples:
        raise DataError(f"{data}: the {split} split is empty")
    store = ImageStore([s.image for s in samples], info.image_size, progress=progress).require_readable()
    masks: list[np.ndarray | None] = []
    for s, hw in zip(samples, store.sizes, strict=True):
        source = s.mask if boxes is None else _box_file(Path(boxes), s.image)
        m = read_region(source, s.image, hw) if source is not None else None
        masks.append(m if m is not None and m.any() else None)
    labels = torch.tensor([ds.label_index(s) for s in samples])
    targets = parse_target(target, info.classes, info.verdicts)
    model = model.to(memory_format=torch.channels_last)
    dev = next(model.parameters()).device
    rng = np.random.default_rng(0)
    out_dir = Path(out)
    panels: dict[tuple[str, str], tuple[str, str]] = {}
    caption = TEXT[lang]["caption"]
    baselines = [None if m is None else _baselines(m, cfg, rng) for m in masks]
    fcfg = faithfulness_config or FaithfulnessConfig()
    faith = _FaithfulnessRun(model, info, fcfg, len(samples), faithfulness, dev) if faithfulness > 0 else None

    rows: list[dict[str, Any]] = []
    for spec in methods:
        method, method_layers, fusion = parse_method_spec(spec)
        if method_layers == ("multiscale",):
            method_layers = multiscale_layers(model)
        for start in tqdm(
            range(0, len(samples), batch_size),
            desc=f"auditing ({method})",
            disable=not progress,
            unit="batch",
            leave=False,
        ):
            idx = list(range(start, min(start + batch_size, len(samples))))
            x = normalize(store.get(idx).to(dev), info.mean, info.std).contiguous(memory_format=torch.channels_last)
            ex = explain(
                model,
                x,
                method=method,
                targets=targets,
                layers=method_layers or None,
                labels=labels[idx].to(dev),
                fusion=fusion,
            )
            maps = ex.maps[:, 0].float().cpu()
            probs = ex.probs.float().cpu()
            faith_rows = faith.measure(store, idx, x, ex, method, method_layers, fusion) if faith is not None else {}
            for j, i in enumerate(idx):
                s = samples[i]
                pred = int(probs[j].argmax())
                correct = pred == int(labels[i])
                scores = None
                mask = masks[i]
                heat = to_original_size(maps[j], store.sizes[i]).numpy()
                if mask is not None:
                    scores = localization_scores(heat, mask, tolerance=cfg.tolerance, threshold=cfg.threshold)
                if report:
                    panels[(str(s.image), spec)] = _write_panel(
                        out_dir / "report",
                        f"{_slug(spec)}/{i:05d}",
                        s.image,
                        heat,
                        caption.format(t=s.label, p=info.classes[pred], q=f"{float(probs[j, pred]):.2f}"),
                    )
                row: dict[str, Any] = {
                    "image": str(s.image),
                    "method": spec,
                    "layers": ",".join(ex.layers),
                    "true": s.label,
                    "predicted": info.classes[pred],
                    "probability": float(probs[j, pred]),
                    "true_probability": float(probs[j, int(labels[i])]),
                    "correct": correct,
                    "true_verdict": s.verdict,
                    "predicted_verdict": info.verdicts[info.classes[pred]],
                    "category": triage(correct, scores, cfg),
                }
                for k in METRICS:
                    row[k] = None if scores is None else getattr(scores, k)
                row["area_fraction"] = None if scores is None else scores.area_fraction
                for k in FAITHFULNESS_METRICS:
                    row[k] = faith_rows.get(i, {}).get(k)
                rows.append(row)

    summary = _summarize(rows, baselines, samples, methods, info.classes, cfg)
    if faith is not None:
        summary["faithfulness"] = faith.summary(rows, methods)
    summary.update(
        {
            "schema_version": SCHEMA_VERSION,
            "mieruka_version": __version__,
            "model": str(model_path),
            "data": str(data),
            "split": split,
            "target": target,
            "config": asdict(cfg),
        }
    )
    header = list(rows[0].keys())
    write_csv(out_dir / "audit.csv", header, [[_fmt(r[k]) for k in header] for r in rows])
    write_json(out_dir / "summary.json", summary)
    review = _review(rows, cfg)
    write_csv(
        out_dir / "review.csv",
        ("rank", "image", "method", "true", "predicted", "probability", "category", "priority", "reasons"),
        review,
    )
    if report:
        write_json(
            out_dir / "report" / "panels.json",
            {
                "classes": list(info.classes),
                "verdicts": info.verdicts,
                "panels": [[image, method, thumb, full] for (image, method), (thumb, full) in panels.items()],
            },
        )
        write_report(out_dir, rows, summary, info.classes, info.verdicts, panels, review, lang=lang)
    return AuditRun(out_dir=out_dir, summary=summary)


class _FaithfulnessRun:
    """The faithfulness checks of one audit: which images, the randomized model, the random-order baseline."""

    def __init__(self, model: nn.Module, info: ModelInfo, cfg: FaithfulnessConfig, n: int, k: int, dev: torch.device):
        from mieruka.models import build_model

        self.model, self.info, self.cfg = model, info, cfg
        self.chosen = set(np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(int)).tolist())
        torch.manual_seed(0)  # the same "destroyed" model every run
        self.random_model = build_model(info.arch, len(info.classes)).to(dev).eval()
        self.random_model = self.random_model.to(memory_format=torch.channels_last)
        self.baseline: dict[int, tuple[float, float]] = {}
        self.rng = torch.Generator().manual_seed(0)

    def measure(
        self,
        store: ImageStore,
        idx: list[int],
        x: torch.Tensor,
        ex: Explanation,
        method: str,
        layers: tuple[str, ...],
        fusion: str,
    ) -> dict[int, dict[str, Any]]:
        """Faithfulness metrics of the chosen images among ``idx`` (explained as ``ex``), by image index."""
        sel = [j for j, i in enumerate(idx) if i in self.chosen]
        if not sel:
            return {}
        dev = x.device
        pixels = store.get([idx[j] for j in sel]).to(dev).float() / 255.0
        heat = ex.maps[sel, 0].float()
        # the class each map explains (targets that are not one class, e.g. ng: the predicted class)
        cls = torch.where(ex.class_indices[sel, 0] >= 0, ex.class_indices[sel, 0], ex.probs[sel].argmax(1))
        kw = {"mean": self.info.mean, "std": self.info.std, "batch_size": self.cfg.batch_size}
        dele, ins = deletion_insertion(
            self.model,
            pixels,
            heat,
            cls,
            steps=self.cfg.steps,
            fill=self.cfg.fill,
            **kw,  # type: ignore[arg-type]
        )
        drop, inc = average_drop_increase(self.model, pixels, heat, cls, **kw)  # type: ignore[arg-type]
        rand_layers = layers or None
        rand = explain(
            self.random_model,
            x[sel],
            method=method,
            targets=[TrueClass()],
            layers=rand_layers,
            labels=cls,
            fusion=fusion,
        ).maps[:, 0]
        rho = rank_correlation(heat, rand)
        missing = [j for j in sel if idx[j] not in self.baseline]
        if missing:  # the chance baseline: the same curves for a random order of the pixels, once per image
            noise = torch.rand(len(missing), *heat.shape[1:], generator=self.rng).to(dev)
            pos = [sel.index(j) for j in missing]
            bd, bi = deletion_insertion(
                self.model,
                pixels[pos],
                noise,
                cls[pos],
                steps=self.cfg.steps,
                fill=self.cfg.fill,
                **kw,  # type: ignore[arg-type]
            )
            for j, d, i_ in zip(missing, auc(bd), auc(bi), strict=True):
                self.baseline[idx[j]] = (float(d), float(i_))
        out = {}
        for n, j in enumerate(sel):
            out[idx[j]] = {
                "deletion_auc": float(auc(dele[n])),
                "insertion_auc": float(auc(ins[n])),
                "average_drop": float(drop[n]),
                "confidence_increase": bool(inc[n]),
                "randomization_rho": float(rho[n]),
            }
        return out

    def summary(self, rows: list[dict[str, Any]], methods: Sequence[str]) -> dict[str, Any]:
        base = list(self.baseline.values())
        per_method = {}
        for m in methods:
            rhos = [float(r["randomization_rho"]) for r in rows if r["method"] == m and r["deletion_auc"] is not None]
            mean_abs = float(np.mean(np.abs(rhos))) if rhos else None
            per_method[m] = {
                "mean_rank_correlation": float(np.mean(rhos)) if rhos else None,
                "mean_abs_rank_correlation": mean_abs,
                "passed": mean_abs is not None and mean_abs < self.cfg.max_rank_correlation,
            }
        return {
            "images": len(self.chosen),
            "config": asdict(self.cfg),
            "baselines": {
                "random_order": {
                    "deletion_auc": _mean([b[0] for b in base]),
                    "insertion_auc": _mean([b[1] for b in base]),
                }
            },
            "randomization_check": per_method,
        }


def _box_file(boxes: Path, image: Path) -> Path | None:
    """The annotation file that covers ``image`` under ``--boxes`` (None: the image has no entry)."""
    if boxes.is_file():
        if boxes.suffix.lower() != ".json":
            raise DataError(f"--boxes {boxes}: give a COCO .json file or a folder of VOC .xml / YOLO .txt files")
        from mieruka.data.annotations import read_coco

        try:
            read_coco(boxes, image)
        except DataError as exc:
            if "no entry" in str(exc):
                return None
            raise
        return boxes
    if not boxes.is_dir():
        raise DataError(f"--boxes {boxes}: no such file or folder")
    for ext in (".xml", ".txt"):
        if (boxes / f"{image.stem}{ext}").is_file():
            return boxes / f"{image.stem}{ext}"
    return None


def _slug(spec: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in spec)


def _write_panel(report_dir: Path, stem: str, image_path: Path, heat: np.ndarray, caption: str) -> tuple[str, str]:
    """Full-size panel (PNG) and a thumbnail (JPEG) for the gallery; paths relative to the report folder."""
    image = read_image(image_path)
    lo, hi = float(heat.min()), float(heat.max())
    shown = (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)
    pic = panel(image, shown, caption)
    full = Path("panels") / f"{stem}.png"
    thumb = Path("thumbs") / f"{stem}.jpg"
    atomic_write(report_dir / full, lambda p: pic.save(p, format="PNG"))
    small = pic.convert("RGB")
    small.thumbnail((440, 440))
    atomic_write(report_dir / thumb, lambda p: small.save(p, format="JPEG", quality=85))
    return thumb.as_posix(), full.as_posix()


def parse_method_spec(spec: str) -> tuple[str, tuple[str, ...], str]:
    """``NAME[:LAYER+LAYER…][/FUSION]`` → (method, layers, fusion).

    No layers means the model's default layer; the layer word ``multiscale`` means every feature stage from stride 8
    down plus the final feature map (:func:`mieruka.explain.engine.multiscale_layers`); ``FUSION`` is ``mean``
    (default) or ``product``. Example: ``layercam:multiscale/product`` (the recommended audit method).
    """
    from mieruka.explain.engine import FUSIONS
    from mieruka.explain.methods import METHODS

    body, _, fusion = spec.partition("/")
    name, _, layer_part = body.partition(":")
    if name not in METHODS:
        raise ValueError(f"--method {spec!r}: unknown method {name!r}; choose from {', '.join(METHODS)}")
    fusion = fusion or "mean"
    if fusion not in FUSIONS:
        raise ValueError(f"--method {spec!r}: unknown fusion {fusion!r}; choose from {', '.join(FUSIONS)}")
    return name, tuple(n for n in layer_part.split("+") if n), fusion


def _fmt(v: Any) -> Any:
    return f"{v:.6f}" if isinstance(v, float) else v


def _summarize(
    rows: list[dict[str, Any]],
    baselines: list[dict[str, dict[str, float]] | None],
    samples: Sequence[Any],
    methods: Sequence[str],
    classes: Sequence[str],
    cfg: AuditConfig,
) -> dict[str, Any]:
    by_image = {str(s.image): b for s, b in zip(samples, baselines, strict=True)}
    out: dict[str, Any] = {"methods": {}}
    for method in methods:
        mrows = [r for r in rows if r["method"] == method]
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in mrows:
            groups["all"].append(r)
            groups[r["true"]].append(r)
        per_group = {}
        for name in ["all", *classes]:
            g = [r for r in groups.get(name, []) if r["energy_inside"] is not None]
            entry: dict[str, Any] = {"images": len(groups.get(name, [])), "with_region": len(g)}
            for k in METRICS:
                entry[k] = _mean([float(r[k]) for r in g])
            bl = [b for b in (by_image[r["image"]] for r in g) if b is not None]
            entry["baselines"] = {
                name_b: {k: _mean([b[name_b][k] for b in bl]) for k in BASELINE_METRICS}
                for name_b in ("uniform", "random", "centre")
            }
            f_rows = [r for r in groups.get(name, []) if r.get("deletion_auc") is not None]
            if f_rows:
                entry["faithfulness"] = {
                    "images": len(f_rows),
                    "deletion_auc": _mean([float(r["deletion_auc"]) for r in f_rows]),
                    "insertion_auc": _mean([float(r["insertion_auc"]) for r in f_rows]),
                    "average_drop_percent": 100 * float(np.mean([float(r["average_drop"]) for r in f_rows])),
                    "increase_rate": _mean([float(bool(r["confidence_increase"])) for r in f_rows]),
                    "randomization_rho": _mean([float(r["randomization_rho"]) for r in f_rows]),
                }
            entry["categories"] = dict(Counter(r["category"] for r in groups.get(name, [])))
            per_group[name] = entry
        out["methods"][method] = per_group
    out["categories"] = list(CATEGORIES)
    return out


def _review(rows: list[dict[str, Any]], cfg: AuditConfig) -> list[tuple[Any, ...]]:
    """Rank image/method rows by how much a human look is worth, with the reasons."""
    ranked = []
    for r in rows:
        reasons = []
        priority = 0.0
        cat = r["category"]
        if not r["correct"]:
            priority += 3
            reasons.append(f"misclassified as {r['predicted']}")
            if r["probability"] >= cfg.label_error_confidence:
                priority += 1
                reasons.append(f"confident ({r['probability']:.2f}): check the label")
            if r["true_verdict"] == "NG" and r["predicted_verdict"] == "OK":
                priority += 2
                reasons.append("escape: a defect would pass")
        if cat == "correct_off_target":
            priority += 2
            reasons.append("right for the wrong reason: attention off the defect")
        elif cat == "wrong_fragmented":
            priority += 1
            reasons.append("attention broken into pieces")
        elif cat == "wrong_off_target":
            reasons.append("attention off the defect")
        elif cat == "wrong_on_target":
            reasons.append("looked at the defect but confused the class: collect more of both classes")
        if r.get("deletion_auc") is not None and r["insertion_auc"] <= r["deletion_auc"]:
            priority += 0.5
            reasons.append(
                "heatmap not faithful: putting its red pixels back helps the score no more than removing them hurts"
            )
        if r["probability"] < cfg.low_confidence:
            priority += 1 - r["probability"]
            reasons.append(f"low confidence ({r['probability']:.2f})")
        if priority > 0:
            ranked.append((priority, r, reasons))
    ranked.sort(key=lambda t: -t[0])
    return [
        (
            n + 1,
            r["image"],
            r["method"],
            r["true"],
            r["predicted"],
            f"{r['probability']:.4f}",
            r["category"],
            f"{p:.3f}",
            "; ".join(reasons),
        )
        for n, (p, r, reasons) in enumerate(ranked)
    ]
