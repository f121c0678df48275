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

import csv
import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mieruka import __version__
from mieruka._io import atomic_write, write_csv, write_json
from mieruka.audit.faithfulness import FaithfulnessConfig, faithfulness_summary
from mieruka.audit.options import AuditOptions
from mieruka.audit.report import TEXT, write_report
from mieruka.audit.selection import AUTO_CHOICES, DEFAULT_METHOD, select_method
from mieruka.audit.summary import SCHEMA_VERSION, AuditSummary, Errors, Regions, SummaryBuilder
from mieruka.audit.triage import CATEGORIES, REVIEW_HEADER, AuditConfig, review_list
from mieruka.audit.worker import AUDIT_COLUMNS, AuditJob, AuditRecord, AuditWorker
from mieruka.batch.job import Job, JobOptions
from mieruka.batch.work import Item
from mieruka.checkpoint import ModelInfo
from mieruka.data.annotations import box_source
from mieruka.data.sample import Sample
from mieruka.errors import DataError
from mieruka.explain.spec import parse_method_spec
from mieruka.explain.targets import parse_target
from mieruka.model_file import ModelFile

__all__ = ["AUDIT_CHUNK", "CATEGORIES", "AuditConfig", "AuditOptions", "AuditRun", "run_audit"]

AUDIT_CHUNK = 64
"""Images read and audited per step (every method): memory stays flat however many images there are."""

REPORT_KEYS = (
    "image",
    "method",
    "true",
    "predicted",
    "probability",
    "correct",
    "true_verdict",
    "predicted_verdict",
    "verdict",
    "category",
    "ng_probability",
    "area_fraction",
    "brightness",
    "deletion_auc",
    "insertion_auc",
)
"""The columns of a row the report and the review list need: what the driver keeps of each row."""


@dataclass(frozen=True)
class AuditRun:
    """Where the audit wrote its files, and its summary."""

    out_dir: Path
    summary: AuditSummary


def _items(info: ModelInfo, data: str | os.PathLike[str], split: str, boxes: Path | None) -> list[Item]:
    """The split's images as job items (with class index and mask); ``--boxes`` that match none is an error."""
    dataset = info.load_dataset(data)
    samples = dataset.split(split)
    if not samples:
        raise DataError(f"{data}: the {split} split is empty")
    if boxes is not None:
        _check_boxes(samples, boxes)
    return [
        Item(i, str(s.image), dataset.label_index(s), "" if s.mask is None else str(s.mask))
        for i, s in enumerate(samples)
    ]


def _check_boxes(samples: Sequence[Sample], boxes: Path) -> None:
    """``--boxes`` that match none of the images are an error (before any work)."""
    if not any(box_source(boxes, s.image) is not None for s in samples):
        raise DataError(
            f"--boxes {boxes}: no entry matches any of the {len(samples)} images (COCO entries are matched by "
            "file name, VOC .xml and YOLO .txt files by the image's stem)"
        )


class _AuditWriter:
    """The driver's side of an audit: ``audit.csv`` (rows streamed to one part file per method, joined at the
    end), the summary accumulated, and the slim rows and panels the report needs."""

    def __init__(self, out_dir: Path, methods: Sequence[str], info: ModelInfo, boxes: Path | None):
        self.out_dir, self.methods, self.info = out_dir, list(methods), info
        self.parts_dir = out_dir / ".audit-parts"
        shutil.rmtree(self.parts_dir, ignore_errors=True)
        self.parts_dir.mkdir(parents=True)
        self.files = [
            open(self.parts_dir / f"{k:03d}.csv", "w", newline="", encoding="utf-8")  # noqa: SIM115 (closed in close())
            for k in range(len(methods))
        ]
        self.csv = [csv.writer(fh) for fh in self.files]
        self.summary = SummaryBuilder(methods, info.classes)
        self.slim: list[dict[str, Any]] = []
        self.panels: dict[tuple[str, str], tuple[str, str]] = {}
        self.rhos: dict[str, list[float]] = {m: [] for m in methods}
        self.random_order: list[tuple[float, float]] = []
        self.source = "masks" if boxes is None else f"boxes {boxes}"
        self.regions = {"images": 0, "matched": 0, "with_region": 0, "ng_without_region": 0}

    def add(self, record: AuditRecord, item: Item) -> None:
        self.regions["images"] += 1
        if record.error:
            for k, spec in enumerate(self.methods):
                self.csv[k].writerow([item.image, spec, *("" for _ in AUDIT_COLUMNS[2:-1]), record.error])
            return
        self.regions["matched"] += int(record.matched)
        self.regions["with_region"] += int(record.chance is not None)
        true_verdict = self.info.verdicts[self.info.classes[item.label]]
        self.regions["ng_without_region"] += int(true_verdict == "NG" and record.chance is None)
        if record.random_order is not None:
            self.random_order.append(record.random_order)
        for k, row in enumerate(record.rows):
            self.csv[k].writerow([_fmt(row[c]) for c in AUDIT_COLUMNS])
            self.summary.add(row, record.chance)
            self.slim.append({c: row[c] for c in REPORT_KEYS})
            if row["randomization_rho"] is not None:
                self.rhos[row["method"]].append(row["randomization_rho"])
        for spec, files in record.panels.items():
            self.panels[(item.image, spec)] = files

    def result(self, faithfulness: FaithfulnessConfig | None, measured: int, job: Job) -> dict[str, Any]:
        """The summary's figures (:class:`AuditSummary`'s fields less the provenance): per method and class,
        faithfulness (with its config), regions and the ``job``'s unreadable images."""
        check = None
        if faithfulness is not None:
            check = faithfulness_summary(faithfulness, measured, self.random_order, self.rhos)
        return {
            **self.summary.result(),
            "faithfulness": check,
            "regions": Regions(source=self.source, **self.regions),
            "errors": Errors(images=job.errors, first=job.first_error),
        }

    def consume(self, chunks: Iterable[list[tuple[Item, AuditRecord]]]) -> None:
        """Every record of the job, in order; ``audit.csv`` is complete only when all came."""
        finished = False
        try:
            for pairs in chunks:
                for item, record in pairs:
                    self.add(record, item)
            finished = True
        finally:
            self.close(keep=finished)

    def close(self, keep: bool) -> None:
        """Join the part files into ``audit.csv`` (``keep``), and remove them."""
        for fh in self.files:
            fh.close()
        if keep:

            def join(path: Path) -> None:
                with open(path, "w", newline="", encoding="utf-8") as out:
                    csv.writer(out).writerow(AUDIT_COLUMNS)
                    for k in range(len(self.methods)):
                        with open(self.parts_dir / f"{k:03d}.csv", encoding="utf-8") as part:
                            shutil.copyfileobj(part, out)

            atomic_write(self.out_dir / "audit.csv", join)
        shutil.rmtree(self.parts_dir, ignore_errors=True)


def run_audit(
    model_path: str | os.PathLike[str], data: str | os.PathLike[str], out: str | os.PathLike[str], **options: Any
) -> AuditRun:
    """Audit the explanations of one split of ``data`` (a data set with masks, or ``boxes``) for one or more methods
    into the folder ``out``; ``options``: :class:`~mieruka.audit.options.AuditOptions`' fields.

    The images are read, explained and written a chunk at a time, on ``engine`` (default: this process), so memory
    stays flat. An unreadable image (or mask or box file) gets rows with an ``error`` (``strict``: the run stops).
    """
    o = AuditOptions(**options)
    file = ModelFile.read(model_path)
    methods, selection = _resolve_methods(file, data, o)
    file.check_request("audit", methods=methods, target=o.target, extra="--faithfulness" if o.faithfulness else "")
    info = file.info.with_layout(o.layout)
    parse_target(o.target, info.classes, info.verdicts)  # bad options fail before any work
    boxes_path = None if o.boxes is None else Path(o.boxes)
    items = _items(info, data, o.split, boxes_path)
    out_dir = Path(out)
    job = AuditJob(
        o.config,
        boxes=None if boxes_path is None else str(boxes_path),
        report_dir=str(out_dir / "report") if o.report else None,
        caption=TEXT[o.lang]["caption"],
        faithfulness=o.faithfulness,
        faithfulness_config=o.faithfulness_config,
        split_size=len(items),
    )
    specs = {m: file.resolve(m) for m in methods}
    worker = AuditWorker(str(model_path), o.device, specs=specs, target=o.target, batch_size=o.batch_size, job=job)
    writer = _AuditWriter(out_dir, methods, info, boxes_path)
    run = Job(worker, items, lambda r: r.error, what="auditing", chunk=AUDIT_CHUNK, shard_dir=out_dir / ".ray-shards")
    writer.consume(run.chunks(JobOptions(o.engine, o.progress, o.strict)))
    run.check_some_read("audited")
    fconfig = o.faithfulness_config if o.faithfulness > 0 else None
    figures = writer.result(fconfig, min(o.faithfulness, len(items)), run)
    summary = AuditSummary(**figures, **_provenance(model_path, info, data, o, selection))
    _report_regions(summary.regions, boxes_path)
    _write(out_dir, writer.slim, summary, info, writer.panels if o.report else None, o)
    return AuditRun(out_dir=out_dir, summary=summary)


def _resolve_methods(
    file: ModelFile, data: str | os.PathLike[str], o: AuditOptions
) -> tuple[list[str], dict[str, Any] | None]:
    """The method specs to audit (checked, with ``lang``, before any work), with ``auto`` replaced by the method
    chosen on the validation split (written to the audit's summary, never into the model it reads; audited beside
    plain Grad-CAM); None: the model's stored method beside Grad-CAM (an exported file: its own method)."""
    if o.lang not in TEXT:
        raise ValueError(f"--lang {o.lang!r}: choose en or ja")
    for spec in o.methods or ():
        if spec not in AUTO_CHOICES:
            parse_method_spec(spec)
    methods = o.methods
    if methods is None:
        if file.exported:
            return [file.stored_method], None
        methods = [file.stored_method, DEFAULT_METHOD]
    scopes = [m for m in methods if m in AUTO_CHOICES]
    if not scopes:
        return list(dict.fromkeys(methods)), None
    selection = select_method(file.path, data, o, scope=scopes[-1])
    print(f"--method auto: {selection['reason']} (in summary.json; the model file is unchanged)")
    chosen = [selection["chosen"] if m in AUTO_CHOICES else m for m in methods]
    return list(dict.fromkeys([*chosen, DEFAULT_METHOD])), selection


def _report_regions(counts: Regions, boxes: Path | None) -> None:
    if boxes is None:
        return
    print(f"--boxes: {counts.with_region} of {counts.images} images have a region")
    if counts.ng_without_region:
        print(f"warning: {counts.ng_without_region} image(s) of NG classes have no region in --boxes", file=sys.stderr)


def _provenance(
    model_path: str | os.PathLike[str],
    info: ModelInfo,
    data: str | os.PathLike[str],
    o: AuditOptions,
    selection: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "chosen_method": selection["chosen"] if selection else info.explain_method,
        "method_selection": selection or info.method_selection,
        "ng_threshold": info.decision_threshold,
        "schema_version": SCHEMA_VERSION,
        "mieruka_version": __version__,
        "model": str(model_path),
        "data": str(data),
        "split": o.split,
        "target": o.target,
        "config": o.config,
    }


def _write(
    out_dir: Path,
    rows: list[dict[str, Any]],
    summary: AuditSummary,
    info: ModelInfo,
    panels: dict[tuple[str, str], tuple[str, str]] | None,
    o: AuditOptions,
) -> None:
    """``summary.json``, ``review.csv`` and, with ``panels``, the report (``audit.csv`` is written as rows come)."""
    write_json(out_dir / "summary.json", summary.to_json())
    review = review_list(rows, o.config)
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
    write_report(out_dir, rows, summary, info.classes, info.verdicts, panels, review, lang=o.lang)


def _fmt(v: Any) -> Any:
    return f"{v:.6f}" if isinstance(v, float) else v
