"""The audit's HTML report: one self-contained folder that opens offline (no CDN, no server).

``DIR/report/index.html`` shows the summary figures (OK/NG at the model's calibrated threshold, beside the view of
the predicted class alone), links to every file of the audit, a labelled colour bar, the confusion matrix, per-class
tables, how the explanation method was chosen, the localization summary by class and method beside chance
baselines, "what to collect next", a gallery of input | heatmap panels (defect regions outlined) grouped by triage
category, and the whole review list with every audited method's panel side by side. Tables sort by a click on a
header. English or Japanese (``lang``).

The page is rendered by Jinja2 with autoescaping (``templates/report.html.j2``): a class or file name is text,
never markup. Served by ``mieruka review``, the same page shows a decision per review item.
"""

from __future__ import annotations

import csv
import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from mieruka._io import atomic_write
from mieruka.audit.collect import what_to_collect
from mieruka.audit.decisions import DECISIONS
from mieruka.audit.report_tables import (
    class_tables,
    faithfulness_table,
    localization_table,
    pct,
    selection_table,
)
from mieruka.audit.summary import AuditSummary
from mieruka.audit.text import TEXT, translate_reasons
from mieruka.errors import DataError
from mieruka.metrics import classification_metrics, gate_rates

__all__ = ["AUDIT_FILES", "TEXT", "rebuild_report", "write_report"]

AUDIT_FILES = ("audit.csv", "summary.json", "review.csv", "decisions.csv", "report/panels.json")
"""The audit's files the report links to (those that exist)."""

_FLOATS = ("probability", "ng_probability", "area_fraction", "brightness")


@functools.cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("mieruka.audit", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    return env.get_template("report.html.j2")


def rebuild_report(out_dir: str | os.PathLike[str], lang: str = "en") -> Path:
    """Write ``DIR/report/index.html`` again from an audit's files (``audit.csv``, ``summary.json``, ``review.csv``
    and ``report/panels.json``), e.g. in the other language; the panels are reused as they are."""
    out = Path(out_dir)
    needed = [out / "audit.csv", out / "summary.json", out / "review.csv", out / "report" / "panels.json"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise DataError(
            f"{out}: not a complete audit folder (missing {', '.join(missing)}); run mieruka audit with a report first"
        )
    with open(out / "audit.csv", newline="", encoding="utf-8") as fh:
        rows: list[dict[str, Any]] = [r for r in csv.DictReader(fh) if not r.get("error")]
    for r in rows:
        for k in _FLOATS:
            r[k] = float(r[k]) if r.get(k) not in (None, "") else None
    with open(out / "review.csv", newline="", encoding="utf-8") as fh:
        review = list(csv.reader(fh))[1:]
    summary = AuditSummary.read(out / "summary.json")
    meta = json.loads((out / "report" / "panels.json").read_text(encoding="utf-8"))
    panels = {(image, method): (thumb, full) for image, method, thumb, full in meta["panels"]}
    return write_report(out, rows, summary, meta["classes"], meta["verdicts"], panels, review, lang=lang)


def _figures(
    one: Sequence[dict[str, Any]], classes: Sequence[str], summary: AuditSummary, t: dict[str, str]
) -> tuple[list[tuple[str, str]], str, dict]:
    """The headline figures (one method's rows: classification is the same for every method). Escapes and overkill
    are the gate's (:func:`mieruka.metrics.gate`: predicted class NG, or NG probability at the model's calibrated
    threshold), as ``predict``, the service and ``evaluate`` apply it; the note gives the predicted class's view."""
    y_true = [classes.index(r["true"]) for r in one]
    y_pred = [classes.index(r["predicted"]) for r in one]
    cls = classification_metrics(y_true, y_pred, classes)
    truth = np.array([r["true_verdict"] == "NG" for r in one])
    gate = gate_rates(truth, np.array([r.get("verdict", r["predicted_verdict"]) == "NG" for r in one]))
    by_class = gate_rates(truth, np.array([r["predicted_verdict"] == "NG" for r in one]))
    figures = [
        (str(len(one)), t["images"]),
        (pct(cls["accuracy"]), t["accuracy"]),
        (pct(cls["balanced_accuracy"]), t["balanced"]),
        (pct(gate["escape_rate"]), t["escape"]),
        (pct(gate["overkill_rate"]), t["overkill"]),
    ]
    threshold = summary.ng_threshold
    if threshold is None:
        note = t["gate_none"]
    else:
        note = t["gate_note"].format(
            th=f"{threshold:.3f}", e=pct(by_class["escape_rate"]), o=pct(by_class["overkill_rate"])
        )
    return figures, note, cls


def _review_items(
    review: Sequence[Any], methods: Sequence[str], panels: dict[tuple[str, str], tuple[str, str]], lang: str
) -> list[dict[str, Any]]:
    """The review list, one item per image (its highest-ranked row), with every method's panel."""
    seen: set[str] = set()
    items = []
    for row in review:
        image = row[1]
        if image in seen:
            continue
        seen.add(image)
        thumbs = [(m, *panels[(image, m)]) for m in methods if (image, m) in panels]
        items.append(
            {
                "rank": row[0],
                "image": image,
                "name": Path(image).name,
                "true": row[3],
                "predicted": row[4],
                "category": row[6],
                "reasons": translate_reasons(row[8], lang),
                "thumbs": thumbs,
            }
        )
    return items


def _gallery(rows: Sequence[dict[str, Any]], categories: Sequence[str], panels: dict, t: dict[str, str]) -> list:
    by_category: dict[str, list[dict[str, Any]]] = {cat: [] for cat in categories}
    for r in rows:
        thumb, full = panels[(r["image"], r["method"])]
        caption = t["caption"].format(t=r["true"], p=r["predicted"], q=f"{r['probability']:.2f}")
        card = {"cls": r["true"], "method": r["method"], "thumb": thumb, "full": full, "caption": caption}
        by_category.setdefault(r["category"], []).append(card)
    return [{"category": cat, "cards": by_category[cat]} for cat in categories if by_category[cat]]


def write_report(
    out_dir: Path,
    rows: Sequence[dict[str, Any]],
    summary: AuditSummary,
    classes: Sequence[str],
    verdicts: dict[str, str],
    panels: dict[tuple[str, str], tuple[str, str]],
    review: Sequence[Any],
    lang: str = "en",
) -> Path:
    """Write ``out_dir/report/index.html``; ``panels`` maps (image, method) → (thumbnail, full) paths relative
    to the report folder."""
    if lang not in TEXT:
        raise ValueError(f"--lang {lang!r}: choose en or ja")
    t = TEXT[lang]
    methods = list(summary.methods)
    method = summary.chosen_method if summary.chosen_method in methods else methods[0]
    one = [r for r in rows if r["method"] == method]  # classification is the same for every method
    figures, gate_note, cls = _figures(one, classes, summary, t)
    tables = [
        *class_tables(cls, classes, verdicts, t),
        *selection_table(summary, t),
        localization_table(summary, classes, t),
        *faithfulness_table(summary, classes, t),
    ]
    files = [(name, f"../{name}") for name in AUDIT_FILES if (Path(out_dir) / name).is_file()]
    nav = [("h-summary", t["summary"]), *((f"h-{tb.id}", tb.title) for tb in tables)]
    nav += [("h-collect", t["collect"]), ("h-gallery", t["gallery"]), ("h-review", t["review"])]
    text = _template().render(
        lang=lang,
        t=t,
        nav=nav,
        figures=figures,
        gate_note=gate_note,
        files=files,
        tables=tables,
        collect=what_to_collect(one, classes, t),
        method=method,
        panels=panels,
        classes=list(classes),
        categories=summary.categories,
        methods=methods,
        gallery=_gallery(rows, summary.categories, panels, t),
        review=_review_items(review, methods, panels, lang),
        decisions=DECISIONS,
        summary=summary.to_json(),
    )
    return atomic_write(out_dir / "report" / "index.html", lambda p: p.write_text(text, encoding="utf-8"))
