"""``mieruka audit MODEL DATA --split test --method gradcam,layercam --out DIR``: is the model looking at the defect?

For every image and method: the map of the explained target at the original image size, its localization metrics
against the ground-truth region (:mod:`mieruka.audit.localization`), chance baselines, and one triage category
(:mod:`mieruka.audit.triage`). Writes

* ``DIR/audit.csv`` — one row per image and method;
* ``DIR/summary.json`` — per method and class: mean metrics beside the chance baselines, category counts
  (:mod:`mieruka.audit.summary`);
* ``DIR/review.csv`` — images ranked by how much a human look is worth, each with its reasons;
* ``DIR/report/index.html`` — the HTML report with its panels (:mod:`mieruka.audit.report`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mieruka import __version__
from mieruka._io import write_csv, write_json
from mieruka.audit.faithfulness import FaithfulnessConfig, FaithfulnessRun
from mieruka.audit.localization import localization_scores
from mieruka.audit.panels import slug, write_panel
from mieruka.audit.report import TEXT, write_report
from mieruka.audit.summary import METRICS, chance_baselines, summarize
from mieruka.audit.triage import CATEGORIES, REVIEW_HEADER, AuditConfig, review_list, triage
from mieruka.checkpoint import ModelInfo, load_checkpoint
from mieruka.data.annotations import box_source, read_region
from mieruka.data.sample import Sample
from mieruka.data.store import ImageStore
from mieruka.errors import DataError
from mieruka.explain.engine import Explanation, explain, multiscale_layers
from mieruka.explain.render import to_original_size
from mieruka.explain.spec import MULTISCALE, parse_method_spec
from mieruka.explain.targets import Target, parse_target
from mieruka.inference import batches, model_input, select_device
from mieruka.metrics import gate, ng_probability

__all__ = ["CATEGORIES", "AuditConfig", "AuditRun", "run_audit"]

SCHEMA_VERSION = 2
FAITHFULNESS_METRICS = ("deletion_auc", "insertion_auc", "average_drop", "confidence_increase", "randomization_rho")


@dataclass(frozen=True)
class AuditRun:
    """Where the audit wrote its files, and its summary."""

    out_dir: Path
    summary: dict[str, Any]


def _regions(
    samples: Sequence[Sample], sizes: Sequence[tuple[int, int]], boxes: Path | None
) -> tuple[list[np.ndarray | None], dict[str, Any]]:
    """Each image's defect region (None: none known, or an empty one), from its mask or from ``--boxes``, and a
    count of where they came from. ``--boxes`` that match no image are an error; NG images left without a region
    are a warning."""
    out: list[np.ndarray | None] = []
    matched = 0
    for sample, hw in zip(samples, sizes, strict=True):
        source = sample.mask if boxes is None else box_source(boxes, sample.image)
        matched += source is not None
        region = read_region(source, sample.image, hw) if source is not None else None
        out.append(region if region is not None and region.any() else None)
    ng_without = sum(1 for s, r in zip(samples, out, strict=True) if s.verdict == "NG" and r is None)
    counts = {
        "source": "masks" if boxes is None else f"boxes {boxes}",
        "images": len(samples),
        "matched": matched,
        "with_region": sum(r is not None for r in out),
        "ng_without_region": ng_without,
    }
    if boxes is not None:
        if matched == 0:
            raise DataError(
                f"--boxes {boxes}: no entry matches any of the {len(samples)} images (COCO entries are matched by "
                "file name, VOC .xml and YOLO .txt files by the image's stem)"
            )
        print(f"--boxes: {counts['with_region']} of {len(samples)} images have a region")
        if ng_without:
            print(f"warning: {ng_without} image(s) of NG classes have no region in --boxes", file=sys.stderr)
    return out, counts


class _Audit:
    """The state one audit shares across methods and batches: model, images, regions, outputs."""

    def __init__(
        self,
        model: torch.nn.Module,
        info: ModelInfo,
        samples: Sequence[Sample],
        store: ImageStore,
        *,
        labels: torch.Tensor,
        regions: list[np.ndarray | None],
        cfg: AuditConfig,
        targets: list[Target] | str,
        faithfulness: FaithfulnessRun | None,
        report_dir: Path | None,
        caption: str,
    ):
        self.model, self.info, self.samples, self.store = model, info, samples, store
        self.labels, self.regions, self.cfg, self.targets = labels, regions, cfg, targets
        self.faithfulness, self.report_dir, self.caption = faithfulness, report_dir, caption
        self.panels: dict[tuple[str, str], tuple[str, str]] = {}
        self.device = next(model.parameters()).device

    def method_rows(self, spec: str, batch_size: int, progress: bool) -> list[dict[str, Any]]:
        """Audit rows of every image for one method spec."""
        method, layers, fusion = parse_method_spec(spec)
        if layers == (MULTISCALE,):
            layers = multiscale_layers(self.model)
        rows = []
        everything = list(range(len(self.samples)))
        for idx in batches(everything, batch_size, desc=f"auditing ({method})", progress=progress):
            x = model_input(self.store, idx, self.device, self.info.mean, self.info.std)
            ex = explain(
                self.model,
                x,
                method=method,
                targets=self.targets,
                layers=layers or None,
                labels=self.labels[idx].to(self.device),
                fusion=fusion,
            )
            measured = {}
            if self.faithfulness is not None:
                measured = self.faithfulness.measure(self.store, idx, x, ex, method, layers, fusion)
            rows += [self._row(spec, i, j, ex, measured.get(i, {})) for j, i in enumerate(idx)]
        return rows

    def _row(self, spec: str, i: int, j: int, ex: Explanation, measured: dict[str, Any]) -> dict[str, Any]:
        """The audit row of image ``i`` (position ``j`` of the batch ``ex`` explains)."""
        sample, info = self.samples[i], self.info
        probs = ex.probs[j].float().cpu()
        pred, true = int(probs.argmax()), int(self.labels[i])
        as_batch = probs[None].numpy()
        rejected = bool(gate(as_batch, info.ng_classes, info.decision_threshold)[0])
        heat = to_original_size(ex.maps[j, 0].float().cpu(), self.store.sizes[i]).numpy()
        region = self.regions[i]
        scores = None
        if region is not None:
            scores = localization_scores(heat, region, tolerance=self.cfg.tolerance, threshold=self.cfg.map_threshold)
        if self.report_dir is not None:
            caption = self.caption.format(t=sample.label, p=info.classes[pred], q=f"{float(probs[pred]):.2f}")
            stem = f"{slug(spec)}/{i:05d}"
            self.panels[(str(sample.image), spec)] = write_panel(
                self.report_dir, stem, sample.image, heat, caption, info.bit_depth
            )
        row: dict[str, Any] = {
            "image": str(sample.image),
            "method": spec,
            "layers": ",".join(ex.layers),
            "true": sample.label,
            "predicted": info.classes[pred],
            "probability": float(probs[pred]),
            "true_probability": float(probs[true]),
            "correct": pred == true,
            "true_verdict": sample.verdict,
            "predicted_verdict": info.verdicts[info.classes[pred]],
            "ng_probability": float(ng_probability(as_batch, info.ng_classes)[0]),
            "verdict": "NG" if rejected else "OK",
            "category": triage(pred == true, scores, self.cfg),
        }
        for k in METRICS:
            row[k] = None if scores is None else getattr(scores, k)
        row["area_fraction"] = None if scores is None else scores.area_fraction
        for k in FAITHFULNESS_METRICS:
            row[k] = measured.get(k)
        return row


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
        methods: Method specs (:func:`~mieruka.explain.spec.parse_method_spec`).
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
    model = model.to(memory_format=torch.channels_last)
    dataset = info.load_dataset(data)
    samples = dataset.split(split)
    if not samples:
        raise DataError(f"{data}: the {split} split is empty")
    store = ImageStore(
        [s.image for s in samples], info.image_size, progress=progress, bit_depth=info.bit_depth
    ).require_readable()
    regions, region_counts = _regions(samples, store.sizes, None if boxes is None else Path(boxes))
    baselines = _chance(samples, regions, cfg)
    out_dir = Path(out)
    faith = None
    if faithfulness > 0:
        fconfig = faithfulness_config or FaithfulnessConfig()
        faith = FaithfulnessRun(model, info, fconfig, len(samples), faithfulness, next(model.parameters()).device)
    audit = _Audit(
        model,
        info,
        samples,
        store,
        labels=torch.tensor([dataset.label_index(s) for s in samples]),
        regions=regions,
        cfg=cfg,
        targets=parse_target(target, info.classes, info.verdicts),
        faithfulness=faith,
        report_dir=out_dir / "report" if report else None,
        caption=TEXT[lang]["caption"],
    )
    rows = [row for spec in methods for row in audit.method_rows(spec, batch_size, progress)]
    summary = summarize(rows, baselines, methods, info.classes)
    if faith is not None:
        summary["faithfulness"] = faith.summary(rows, methods)
    summary.update(_provenance(model_path, info, data, split, target, cfg), regions=region_counts)
    _write(out_dir, rows, summary, cfg, info, audit.panels if report else None, lang)
    return AuditRun(out_dir=out_dir, summary=summary)


def _chance(
    samples: Sequence[Sample], regions: list[np.ndarray | None], cfg: AuditConfig
) -> dict[str, dict[str, dict[str, float]] | None]:
    rng = np.random.default_rng(0)  # the random baseline map of each region, in image order
    chance = [None if r is None else chance_baselines(r, cfg, rng) for r in regions]
    return {str(s.image): c for s, c in zip(samples, chance, strict=True)}


def _provenance(
    model_path: str | os.PathLike[str],
    info: ModelInfo,
    data: str | os.PathLike[str],
    split: str,
    target: str,
    cfg: AuditConfig,
) -> dict[str, Any]:
    return {
        "ng_threshold": info.decision_threshold,
        "schema_version": SCHEMA_VERSION,
        "mieruka_version": __version__,
        "model": str(model_path),
        "data": str(data),
        "split": split,
        "target": target,
        "config": asdict(cfg),
    }


def _write(
    out_dir: Path,
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
    cfg: AuditConfig,
    info: ModelInfo,
    panels: dict[tuple[str, str], tuple[str, str]] | None,
    lang: str,
) -> None:
    """``audit.csv``, ``summary.json``, ``review.csv`` and, with ``panels``, the report."""
    header = list(rows[0].keys())
    write_csv(out_dir / "audit.csv", header, [[_fmt(r[k]) for k in header] for r in rows])
    write_json(out_dir / "summary.json", summary)
    review = review_list(rows, cfg)
    write_csv(out_dir / "review.csv", REVIEW_HEADER, review)
    if panels is None:
        return
    write_json(
        out_dir / "report" / "panels.json",
        {
            "classes": list(info.classes),
            "verdicts": info.verdicts,
            "panels": [[image, method, thumb, full] for (image, method), (thumb, full) in panels.items()],
        },
    )
    write_report(out_dir, rows, summary, info.classes, info.verdicts, panels, review, lang=lang)


def _fmt(v: Any) -> Any:
    return f"{v:.6f}" if isinstance(v, float) else v
