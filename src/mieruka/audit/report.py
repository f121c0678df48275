"""The audit's HTML report: one self-contained folder that opens offline (no CDN, no server).

``DIR/report/index.html`` shows the summary figures, the confusion matrix, the OK/NG gate, per-class tables, the
localization summary by class and method beside chance baselines, and a gallery of input | heatmap panels grouped by
triage category (thumbnails that open full size, filters by class and category). English or Japanese (``lang``).
"""

from __future__ import annotations

import csv
import html
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mieruka._io import atomic_write
from mieruka.audit.text import TEXT
from mieruka.errors import DataError
from mieruka.metrics import classification_metrics, gate_rates

__all__ = ["TEXT", "write_report"]

_CSS = """
body{font-family:'IPAexGothic','Noto Sans CJK JP',sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}.figs{display:flex;gap:24px;flex-wrap:wrap}
.fig{border:1px solid #ddd;padding:8px 14px;border-radius:6px}.fig b{font-size:1.6em;display:block}
.gallery{display:flex;flex-wrap:wrap;gap:8px}.card{width:220px;font-size:12px}
.card img{width:220px;height:auto;border:1px solid #ccc}h3{margin-top:18px}.hidden{display:none}
"""

_JS = """
function applyFilter(){const c=document.getElementById('f-class').value,k=document.getElementById('f-cat').value,
m=document.getElementById('f-method').value;document.querySelectorAll('.card').forEach(e=>{const ok=
(c==='*'||e.dataset.cls===c)&&(k==='*'||e.dataset.cat===k)&&(m==='*'||e.dataset.method===m);
e.classList.toggle('hidden',!ok)});document.querySelectorAll('.group').forEach(g=>{g.classList.toggle('hidden',
!g.querySelector('.card:not(.hidden)'))})}
document.addEventListener('DOMContentLoaded',()=>{['f-class','f-cat','f-method'].forEach(i=>
document.getElementById(i).addEventListener('change',applyFilter))});
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _faithfulness_table(summary: dict[str, Any], classes: Sequence[str], t: dict[str, str]) -> list[str]:
    f = summary["faithfulness"]
    base = f["baselines"]["random_order"]
    out = [
        f"<h2>{t['faithfulness']}</h2><table id='faithfulness'><tr><th>{t['method']}</th><th>{t['class']}</th>"
        f"<th>n</th><th>{t['deletion']}</th><th>{t['insertion']}</th><th>{t['drop']}</th><th>{t['increase']}</th>"
        f"<th>{t['rho']}</th><th>{t['sanity']}</th></tr>"
    ]
    for method, groups in summary["methods"].items():
        check = f["randomization_check"].get(method, {})
        verdict = t["passed"] if check.get("passed") else t["failed"]
        for name in ["all", *classes]:
            g = (groups.get(name) or {}).get("faithfulness")
            if not g:
                continue
            out.append(
                f"<tr><td>{_e(method)}</td><td>{_e(t['all'] if name == 'all' else name)}</td><td>{g['images']}</td>"
                f"<td>{g['deletion_auc']:.3f}</td><td>{g['insertion_auc']:.3f}</td>"
                f"<td>{g['average_drop_percent']:.1f}</td><td>{g['increase_rate']:.3f}</td>"
                f"<td>{g['randomization_rho']:.3f}</td><td>{verdict if name == 'all' else ''}</td></tr>"
            )
    if base["deletion_auc"] is not None:
        out.append(
            f"<tr><td>{t['random_order']}</td><td>{t['all']}</td><td>{f['images']}</td>"
            f"<td>{base['deletion_auc']:.3f}</td><td>{base['insertion_auc']:.3f}</td><td></td><td></td><td></td>"
            "<td></td></tr>"
        )
    out.append("</table>")
    return out


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
        rows: list[dict[str, Any]] = list(csv.DictReader(fh))
    for r in rows:
        r["probability"] = float(r["probability"])
    with open(out / "review.csv", newline="", encoding="utf-8") as fh:
        review = list(csv.reader(fh))[1:]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    meta = json.loads((out / "report" / "panels.json").read_text(encoding="utf-8"))
    panels = {(image, method): (thumb, full) for image, method, thumb, full in meta["panels"]}
    return write_report(out, rows, summary, meta["classes"], meta["verdicts"], panels, review, lang=lang)


def _figures(one: Sequence[dict[str, Any]], classes: Sequence[str], t: dict[str, str]) -> tuple[list[str], dict]:
    """The headline figures (the first method's rows: classification is the same for every method). Escapes and
    overkill are the gate's (:func:`mieruka.metrics.gate`: predicted class NG, or NG probability at the model's
    threshold), as ``predict``, the service and ``evaluate`` apply it."""
    y_true = [classes.index(r["true"]) for r in one]
    y_pred = [classes.index(r["predicted"]) for r in one]
    cls = classification_metrics(y_true, y_pred, classes)
    gate = gate_rates(
        np.array([r["true_verdict"] == "NG" for r in one]),
        np.array([r.get("verdict", r["predicted_verdict"]) == "NG" for r in one]),
    )
    parts = [f"<h2>{t['summary']}</h2><div class='figs' id='figures'>"]
    for label, value in (
        (t["images"], str(len(one))),
        (t["accuracy"], _pct(cls["accuracy"])),
        (t["balanced"], _pct(cls["balanced_accuracy"])),
        (t["escape"], _pct(gate["escape_rate"])),
        (t["overkill"], _pct(gate["overkill_rate"])),
    ):
        parts.append(f"<div class='fig'><b>{_e(value)}</b>{_e(label)}</div>")
    parts.append("</div>")
    return parts, cls


def _class_tables(cls: dict, classes: Sequence[str], verdicts: dict[str, str], t: dict[str, str]) -> list[str]:
    """The confusion matrix and the per-class table."""
    cm = cls["confusion_matrix"]
    parts = [
        f"<h2>{t['confusion']}</h2><table id='confusion'><tr><th>{t['true']} \\ {t['predicted']}</th>"
        + "".join(f"<th>{_e(c)}</th>" for c in classes)
        + "</tr>"
    ]
    for i, c in enumerate(classes):
        parts.append(f"<tr><td>{_e(c)} ({verdicts[c]})</td>" + "".join(f"<td>{v}</td>" for v in cm[i]) + "</tr>")
    parts.append("</table>")
    parts.append(
        f"<h2>{t['per_class']}</h2><table><tr><th>{t['class']}</th><th>{t['precision']}</th>"
        f"<th>{t['recall']}</th><th>F1</th><th>{t['support']}</th></tr>"
    )
    for c in classes:
        pc = cls["per_class"][c]
        parts.append(
            f"<tr><td>{_e(c)}</td><td>{pc['precision']:.3f}</td><td>{pc['recall']:.3f}</td>"
            f"<td>{pc['f1']:.3f}</td><td>{pc['support']}</td></tr>"
        )
    parts.append("</table>")
    return parts


def _localization_table(summary: dict[str, Any], classes: Sequence[str], t: dict[str, str]) -> list[str]:
    parts = [
        f"<h2>{t['localization']}</h2><p>{_e(t['defects_only'])}</p><table id='localization'><tr><th>{t['method']}"
        f"</th><th>{t['class']}</th><th>n</th><th>{t['energy']}</th><th>{t['lift']}</th><th>{t['pointing']}</th>"
        f"<th>{t['rank']}</th><th>{t['ap']}</th><th>{_e(t['iou'])}</th><th>{_e(t['attended'])}</th>"
        f"<th>{_e(t['iou_area'])}</th><th>{t['energy']} ({t['uniform']})</th>"
        f"<th>{t['pointing']} ({t['uniform']})</th><th>{t['pointing']} ({t['center']})</th></tr>"
    ]
    labels = {"all": t["all"], "marked_ok": t["marked_ok_row"]}
    for method, groups in summary["methods"].items():
        for name in ["all", "marked_ok", *classes]:
            g = groups.get(name)
            if not g or not g["with_region"]:
                continue
            b = g["baselines"]
            parts.append(
                f"<tr><td>{_e(method)}</td><td>{_e(labels.get(name, name))}</td><td>{g['with_region']}"
                f"</td><td>{g['energy_inside']:.3f}</td><td>{g['lift']:.2f}</td><td>{g['pointing_hit']:.3f}</td>"
                f"<td>{g['relevance_rank']:.3f}</td><td>{g['average_precision']:.3f}</td><td>{g['iou']:.3f}</td>"
                f"<td>{_pct(g.get('attended_fraction'))}</td><td>{_num(g.get('iou_at_area'))}</td>"
                f"<td>{b['uniform']['energy_inside']:.3f}</td><td>{b['uniform']['pointing_hit']:.3f}</td>"
                f"<td>{b['center']['pointing_hit']:.3f}</td></tr>"
            )
    parts.append("</table>")
    return parts


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def _selection_table(summary: dict[str, Any], t: dict[str, str]) -> list[str]:
    """The candidates of ``--method auto`` with their validation figures, and why the winner won."""
    sel = summary.get("method_selection") or {}
    if not sel.get("candidates"):
        return []
    parts = [
        f"<h2>{t['selection']}</h2><p id='selection-reason'>{_e(sel['reason'])}</p><table id='selection'><tr>"
        f"<th>{t['method']}</th><th>{t['ap']}</th><th>{t['energy']}</th><th>{t['pointing']}</th><th>{t['rank']}"
        f"</th><th>{_e(t['iou_area'])}</th><th></th></tr>"
    ]
    for c in sel["candidates"]:
        mark = t["chosen"] if c["method"] == sel["chosen"] else ""
        parts.append(
            f"<tr><td>{_e(c['method'])}</td><td>{_num(c['average_precision'])}</td><td>{_num(c['energy_inside'])}"
            f"</td><td>{_num(c['pointing_hit'])}</td><td>{_num(c['relevance_rank'])}</td>"
            f"<td>{_num(c['iou_at_area'])}</td><td>{_e(mark)}</td></tr>"
        )
    parts.append(f"</table><p>{_e(sel['split'])}: n = {sel['images']}</p>")
    return parts


def _gallery(
    rows: Sequence[dict[str, Any]],
    summary: dict[str, Any],
    classes: Sequence[str],
    panels: dict[tuple[str, str], tuple[str, str]],
    t: dict[str, str],
) -> list[str]:
    """Filters, then the panels grouped by triage category."""
    methods = list(summary["methods"])
    parts = [
        f"<h2>{t['gallery']}</h2><p>{t['class']} <select id='f-class'><option value='*'>{t['all']}</option>"
        + "".join(f"<option value='{_e(c)}'>{_e(c)}</option>" for c in classes)
        + f"</select> {t['category']} <select id='f-cat'><option value='*'>{t['all']}</option>"
        + "".join(f"<option value='{k}'>{_e(t[k])}</option>" for k in summary["categories"])
        + f"</select> {t['method']} <select id='f-method'><option value='*'>{t['all']}</option>"
        + "".join(f"<option value='{_e(m)}'>{_e(m)}</option>" for m in methods)
        + "</select></p>"
    ]
    for cat in summary["categories"]:
        members = [r for r in rows if r["category"] == cat]
        if not members:
            continue
        parts.append(f"<div class='group' data-cat='{cat}'><h3>{_e(t[cat])} ({len(members)})</h3><div class='gallery'>")
        for r in members:
            thumb, full = panels[(r["image"], r["method"])]
            cap = t["caption"].format(t=r["true"], p=r["predicted"], q=f"{r['probability']:.2f}")
            parts.append(
                f"<div class='card' data-cls='{_e(r['true'])}' data-cat='{cat}' "
                f"data-method='{_e(r['method'])}'><a href='{_e(full)}'><img loading='lazy' "
                f"src='{_e(thumb)}' alt='{_e(cap)}'></a><br>{_e(cap)}<br>{_e(r['method'])}</div>"
            )
        parts.append("</div></div>")
    return parts


def _review_table(review: Sequence[Any], t: dict[str, str]) -> list[str]:
    parts = [
        f"<h2>{t['review']}</h2><table id='review'><tr><th>#</th><th>image</th><th>{t['method']}</th>"
        f"<th>{t['true']}</th><th>{t['predicted']}</th><th>{t['reasons']}</th></tr>"
    ]
    for row in review[:50]:
        parts.append(
            f"<tr><td>{row[0]}</td><td>{_e(Path(row[1]).name)}</td><td>{_e(row[2])}</td><td>{_e(row[3])}"
            f"</td><td>{_e(row[4])}</td><td style='text-align:left'>{_e(row[8])}</td></tr>"
        )
    parts.append("</table>")
    return parts


def write_report(
    out_dir: Path,
    rows: Sequence[dict[str, Any]],
    summary: dict[str, Any],
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
    one = [r for r in rows if r["method"] == rows[0]["method"]]  # classification is the same for every method
    figures, cls = _figures(one, classes, t)
    parts = [
        f"<!doctype html><html lang='{lang}'><head><meta charset='utf-8'><title>{_e(t['title'])}</title>"
        f"<style>{_CSS}</style><script>{_JS}</script></head><body><h1>{_e(t['title'])}</h1>",
        *figures,
        *_class_tables(cls, classes, verdicts, t),
        *_selection_table(summary, t),
        *_localization_table(summary, classes, t),
    ]
    if "faithfulness" in summary:
        parts.extend(_faithfulness_table(summary, classes, t))
    parts += _gallery(rows, summary, classes, panels, t)
    parts += _review_table(review, t)
    parts.append(
        f"<script type='application/json' id='summary-data'>{json.dumps(summary, ensure_ascii=False)}"
        "</script></body></html>"
    )
    text = "\n".join(parts)
    return atomic_write(out_dir / "report" / "index.html", lambda p: p.write_text(text, encoding="utf-8"))
