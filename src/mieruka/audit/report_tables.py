"""The audit report's tables as data (title, header, formatted rows) for the template to lay out and escape."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mieruka.audit.summary import AuditSummary

__all__ = ["Table", "class_tables", "faithfulness_table", "localization_table", "pct", "selection_table"]


@dataclass(frozen=True)
class Table:
    """One sortable table of the report."""

    id: str
    title: str
    head: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""
    after: str = ""


def pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def num(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def class_tables(cls: dict, classes: Sequence[str], verdicts: dict[str, str], t: dict[str, str]) -> list[Table]:
    """The confusion matrix and the per-class table."""
    cm = cls["confusion_matrix"]
    confusion = Table(
        "confusion",
        t["confusion"],
        (f"{t['true']} \\ {t['predicted']}", *classes),
        tuple((f"{c} ({verdicts[c]})", *(str(v) for v in cm[i])) for i, c in enumerate(classes)),
    )
    rows = []
    for c in classes:
        pc = cls["per_class"][c]
        rows.append((c, f"{pc['precision']:.3f}", f"{pc['recall']:.3f}", f"{pc['f1']:.3f}", str(pc["support"])))
    per_class = Table(
        "per-class", t["per_class"], (t["class"], t["precision"], t["recall"], "F1", t["support"]), tuple(rows)
    )
    return [confusion, per_class]


def selection_table(summary: AuditSummary, t: dict[str, str]) -> list[Table]:
    """The candidates of ``--method auto`` with their validation figures, and why the winner won."""
    sel = summary.method_selection or {}
    if not sel.get("candidates"):
        return []
    rows = tuple(
        (
            c["method"],
            num(c["average_precision"]),
            num(c["energy_inside"]),
            num(c["pointing_hit"]),
            num(c["relevance_rank"]),
            num(c["iou_at_area"]),
            t["chosen"] if c["method"] == sel["chosen"] else "",
        )
        for c in sel["candidates"]
    )
    head = (t["method"], t["ap"], t["energy"], t["pointing"], t["rank"], t["iou_area"], "")
    after = f"{sel['split']}: n = {sel['images']}"
    return [Table("selection", t["selection"], head, rows, note=_reason(sel, t), after=after)]


def _reason(sel: dict[str, Any], t: dict[str, str]) -> str:
    """Why the winner won: as stored (English), or said again in the report's language from the table."""
    if not t["sel_reason"] or not sel["images"]:
        return str(sel["reason"])
    by = {c["method"]: c["average_precision"] for c in sel["candidates"]}
    return t["sel_reason"].format(
        chosen=sel["chosen"],
        split=sel["split"],
        n=sel["images"],
        ap=num(by.get(sel["chosen"])),
        best=num(max(v for v in by.values() if v is not None)),
        base=num(by.get("gradcam")),
        tie=sel.get("tie", 0.005),
    )


def localization_table(summary: AuditSummary, classes: Sequence[str], t: dict[str, str]) -> Table:
    head = (
        t["method"], t["class"], "n", t["energy"], t["lift"], t["pointing"], t["rank"], t["ap"], t["iou"],
        t["attended"], t["iou_area"], f"{t['energy']} ({t['uniform']})", f"{t['pointing']} ({t['uniform']})",
        f"{t['pointing']} ({t['center']})",
    )  # fmt: skip
    labels = {"all": t["all"], "marked_ok": t["marked_ok_row"]}
    rows = []
    for method, groups in summary.methods.items():
        for name in ["all", "marked_ok", *classes]:
            g = groups.get(name)
            if g is None or not g.with_region:
                continue
            b = g.baselines
            rows.append(
                (
                    method,
                    labels.get(name, name),
                    str(g.with_region),
                    num(g.energy_inside),
                    "–" if g.lift is None else f"{g.lift:.2f}",
                    num(g.pointing_hit),
                    num(g.relevance_rank),
                    num(g.average_precision),
                    num(g.iou),
                    pct(g.attended_fraction),
                    num(g.iou_at_area),
                    f"{b['uniform']['energy_inside']:.3f}",
                    f"{b['uniform']['pointing_hit']:.3f}",
                    f"{b['center']['pointing_hit']:.3f}",
                )
            )
    return Table("localization", t["localization"], head, tuple(rows), note=t["defects_only"])


def faithfulness_table(summary: AuditSummary, classes: Sequence[str], t: dict[str, str]) -> list[Table]:
    f = summary.faithfulness
    if f is None:
        return []
    base = f.baselines["random_order"]
    head = (
        t["method"],
        t["class"],
        "n",
        t["deletion"],
        t["insertion"],
        t["drop"],
        t["increase"],
        t["rho"],
        t["sanity"],
    )
    rows = []
    for method, groups in summary.methods.items():
        check = f.randomization_check.get(method)
        verdict = t["passed"] if check is not None and check.passed else t["failed"]
        for name in ["all", *classes]:
            group = groups.get(name)
            g = None if group is None else group.faithfulness
            if g is None:
                continue
            rows.append(
                (
                    method,
                    t["all"] if name == "all" else name,
                    str(g.images),
                    f"{g.deletion_auc:.3f}",
                    f"{g.insertion_auc:.3f}",
                    f"{g.average_drop_percent:.1f}",
                    f"{g.increase_rate:.3f}",
                    f"{g.randomization_rho:.3f}",
                    verdict if name == "all" else "",
                )
            )
    if base["deletion_auc"] is not None:
        rows.append(
            (t["random_order"], t["all"], str(f.images), f"{base['deletion_auc']:.3f}",
             f"{base['insertion_auc']:.3f}", "", "", "", "")
        )  # fmt: skip
    return [Table("faithfulness", t["faithfulness"], head, tuple(rows))]
