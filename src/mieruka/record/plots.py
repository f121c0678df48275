"""``monitor --plot``: the drift report as one picture — each feature's reference and window distributions over the
reference's quantile bins (the bins the PSI sums over: a stable feature has every window bar near its reference
bar, a tenth each), the class mix, and the NG rate as a p-chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mieruka._io import atomic_write

__all__ = ["plot_report"]


def plot_report(report: Any, path: str | Path) -> Path:
    """Draw :class:`~mieruka.record.monitor.DriftReport` ``report`` as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    features = list(report.histograms)
    panels = len(features) + 2
    cols = 3
    rows = -(-panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 2.8 * rows), squeeze=False)
    moved = {a["feature"] for a in report.alerts}
    for ax, f in zip(axes.flat, features, strict=False):
        h = report.histograms[f]
        labels = [f"<{h['edges'][0]:.3g}"] + [f"≥{e:.3g}" for e in h["edges"]] if h["edges"] else ["all"]
        _bars(ax, h["reference"], h["window"], labels, f"{f}  PSI {report.psi[f]:.2f}", f in moved)
    names = sorted(set(report.classes.get("reference", {})) | set(report.classes.get("window", {})))
    _bars(axes.flat[len(features)], [report.classes["reference"].get(c, 0.0) for c in names],
          [report.classes["window"].get(c, 0.0) for c in names], names,
          f"class mix  PSI {report.psi.get('class_mix', 0.0):.2f}", "class_mix" in moved)  # fmt: skip
    ax = axes.flat[len(features) + 1]
    chart = report.ng_rate["chart"]
    x = range(1, len(chart) + 1)
    ax.plot(list(x), [p["rate"] for p in chart], "o-", color="tab:red" if "ng_rate" in moved else "tab:blue")
    ax.step(list(x), [p["upper"] for p in chart], "--", where="mid", color="0.4")
    ax.step(list(x), [p["lower"] for p in chart], "--", where="mid", color="0.4")
    ax.axhline(report.ng_rate["reference"], color="0.65")
    ax.set(xlabel="subgroup of the window (oldest first)")
    ax.set_title("NG rate (p-chart, 3-sigma limits)" + ("  ALERT" if "ng_rate" in moved else ""), fontsize=9)
    for extra in list(axes.flat)[panels:]:
        extra.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"model {report.model_id[:12]}: {report.window['n']} decisions against {report.reference['source']}",
                 fontsize=10)  # fmt: skip
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    out = atomic_write(Path(path), lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)
    return out


def _bars(ax: Any, reference: list[float], window: list[float], labels: list[str], title: str, alert: bool) -> None:
    """The reference's shares (grey) beside the window's (red on an alert) in one panel."""
    x = range(len(reference))
    ax.bar([i - 0.2 for i in x], reference, width=0.4, color="0.65", label="reference")
    ax.bar([i + 0.2 for i in x], window, width=0.4, color="tab:red" if alert else "tab:blue", label="window")
    ax.set_xticks(list(x), labels, fontsize=6, rotation=45)
    ax.set_title(title + ("  ALERT" if alert else ""), fontsize=9)
