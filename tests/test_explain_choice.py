"""``--method auto``: the candidates are scored on the validation regions, the choice is stored with the model and
used by default; fair scores (at the region's area) and marked OK images."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mieruka.audit.localization import iou_dice_at_area, relevance_rank_accuracy
from mieruka.audit.selection import DEFAULT_METHOD, TIE, _choose, candidates
from mieruka.checkpoint import read_info
from mieruka.explain.graph import graph_method

pytestmark = pytest.mark.xdist_group("explain_choice")  # one process builds its audited copy (make test)


def _table(**aps: float) -> tuple[int, list[dict[str, float | str]]]:
    return 10, [{"method": m.replace("_", ":"), "average_precision": ap} for m, ap in aps.items()]


def test_the_highest_ap_wins_and_ties_go_to_the_simpler_method() -> None:
    chosen = _choose("val", _table(gradcam=0.30, **{"gradcam++": 0.31}, layercam=0.45))
    assert chosen["chosen"] == "layercam" and "0.450" in chosen["reason"] and "0.300" in chosen["reason"]
    tied = _choose("val", _table(gradcam=0.30, **{"gradcam++": 0.40}, layercam=0.40 + TIE / 2))
    assert tied["chosen"] == "gradcam++"  # within the tie of the best, and simpler
    assert _choose("val", _table(gradcam=0.50, layercam=0.50 + TIE / 2))["chosen"] == "gradcam"
    for aps in ([0.2, 0.1, 0.3], [0.5, 0.49, 0.1], [0.1, 0.1 + TIE * 0.9, 0.1 + TIE * 1.5]):
        pick = _choose("val", _table(gradcam=aps[0], a=aps[1], b=aps[2]))
        ap = {"gradcam": aps[0], "a": aps[1], "b": aps[2]}[pick["chosen"]]
        assert ap >= aps[0]  # never below plain Grad-CAM's validation AP


def test_no_regions_keeps_gradcam_and_says_so() -> None:
    out = _choose("val", (0, [{"method": "gradcam", "average_precision": None}]))
    assert out["chosen"] == DEFAULT_METHOD and "no NG image of the val split has a marked region" in out["reason"]


def test_scores_at_the_region_area() -> None:
    heat = np.array([[5.0, 4.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    mask = np.zeros((3, 3), dtype=bool)
    mask[0, 0] = mask[2, 2] = mask[1, 1] = True  # top-3 pixels: (0,0), (0,1), (1,0): one of them in the region
    iou, dice = iou_dice_at_area(heat, mask)
    assert dice == pytest.approx(1 / 3) and iou == pytest.approx(1 / 5)  # |T∩R| = 1, |T∪R| = 5
    assert dice == pytest.approx(relevance_rank_accuracy(heat, mask))
    assert iou_dice_at_area(heat, np.zeros((3, 3), dtype=bool)) == (0.0, 0.0)


def test_export_uses_the_stored_method_where_the_graph_can() -> None:
    assert graph_method("gradcam++") == ("gradcam++", "")
    table = {"candidates": [{"method": "gradcam", "average_precision": 0.2}, {"method": "gradcam++",
             "average_precision": 0.3}, {"method": "layercam:multiscale/mean", "average_precision": 0.5}]}  # fmt: skip
    method, note = graph_method("layercam:multiscale/mean", table)
    assert method == "gradcam++" and "0.300" in note
    assert graph_method("layercam:multiscale/mean", {})[0] == "gradcam"


@pytest.fixture(scope="module")
def auto_audit(tiny_run: Path, synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A copy of the tiny model, audited with --method auto-all --store-method on the test split."""
    root = tmp_path_factory.mktemp("auto")
    model = root / "model.safetensors"
    shutil.copy(tiny_run / "model.safetensors", model)
    cmd = [sys.executable, "-m", "mieruka", "audit", str(model), str(synth_dir), "--split", "test", "--method",
           "auto-all", "--store-method", "--out", str(root / "audit"), "--quiet"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "--method auto: " in done.stdout
    return model, root / "audit"


def test_auto_chooses_among_the_maps_the_graph_computes_and_auto_all_among_every_one() -> None:
    from mieruka.explain.graph import EXPORT_METHODS
    from mieruka.models import build_model

    model = build_model("tf_efficientnet_lite0", 3)
    graph = candidates(model, "bn2")
    assert graph == ["gradcam", "gradcam++", "layercam"] and set(graph) <= set(EXPORT_METHODS)
    every = candidates(model, "bn2", "auto-all")
    assert every[:3] == graph and {"gradcam:blocks.4", "layercam:multiscale/mean"} <= set(every)


def test_audit_auto_leaves_the_model_it_reads_unchanged(tiny_run: Path, synth_dir: Path, tmp_path: Path) -> None:
    """The interface: ``audit MODEL DATA --method auto`` writes its choice to the audit's summary and leaves MODEL's
    bytes as they were (storing it is the explicit --store-method)."""
    import hashlib

    from mieruka.cli import main

    model = tmp_path / "model.safetensors"
    shutil.copy(tiny_run / "model.safetensors", model)
    before = hashlib.sha256(model.read_bytes()).hexdigest()
    args = ["audit", str(model), str(synth_dir), "--split", "test", "--method", "auto", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert hashlib.sha256(model.read_bytes()).hexdigest() == before
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["chosen_method"] == summary["method_selection"]["chosen"]
    assert main(["audit", str(model), str(synth_dir), "--store-method", "--out", str(tmp_path / "b")]) == 2


def test_audit_auto_writes_the_choice_and_stores_it(auto_audit: tuple[Path, Path]) -> None:
    model, out = auto_audit
    summary = json.loads((out / "summary.json").read_text())
    sel = summary["method_selection"]
    assert summary["chosen_method"] == sel["chosen"] == read_info(model).explain_method
    assert [c["method"] for c in sel["candidates"]][:2] == ["gradcam", "gradcam++"]
    assert {"layercam:multiscale/mean", "layercam:multiscale/product"} <= {c["method"] for c in sel["candidates"]}
    assert sel["split"] == "val" and sel["images"] > 0
    best = max(c["average_precision"] for c in sel["candidates"])
    chosen = next(c for c in sel["candidates"] if c["method"] == sel["chosen"])
    assert chosen["average_precision"] >= best - TIE
    assert set(summary["methods"]) == {sel["chosen"], "gradcam"}
    for groups in summary["methods"].values():
        a = groups["all"]
        assert 0 <= a["iou_at_area"] <= a["dice_at_area"] <= 1 and 0 < a["attended_fraction"] <= 1
    info = subprocess.run([sys.executable, "-m", "mieruka", "info", str(model)], capture_output=True, text=True)
    assert json.loads(info.stdout)["explain_method"] == sel["chosen"]
    html = (out / "report" / "index.html").read_text()
    assert "id='selection'" in html and sel["reason"].split(":")[0] in html


def test_marked_ok_images_are_scored_apart(auto_audit: tuple[Path, Path], synth_dir: Path) -> None:
    import csv

    _, out = auto_audit
    summary = json.loads((out / "summary.json").read_text())
    with open(out / "audit.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    gradcam = [r for r in rows if r["method"] == "gradcam"]
    marked = [r for r in gradcam if r["true_verdict"] == "OK" and r["energy_inside"]]
    defects = [r for r in gradcam if r["true_verdict"] == "NG" and r["energy_inside"]]
    assert marked and all(r["category"] == "marked_ok" for r in marked)  # synth's normal (scratch)/(dirt) carry masks
    g = summary["methods"]["gradcam"]
    assert summary["marked_ok_images"] == len(marked) and "scored apart" in summary["marked_ok_note"]
    assert g["marked_ok"]["with_region"] == len(marked)
    assert g["all"]["with_region"] == len(defects)
    assert g["all"]["energy_inside"] == pytest.approx(np.mean([float(r["energy_inside"]) for r in defects]), abs=1e-5)


def test_explain_uses_the_stored_method_by_default(auto_audit: tuple[Path, Path], synth_dir: Path, tmp_path: Path)\
        -> None:  # fmt: skip
    from mieruka.explain.spec import parse_method_spec

    model, _ = auto_audit
    stored = read_info(model).explain_method
    subprocess.run([sys.executable, "-m", "mieruka", "explain", str(model), str(synth_dir), "--out", str(tmp_path),
                    "--quiet"], check=True, capture_output=True)  # fmt: skip
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    name, layers, fusion = parse_method_spec(stored)
    assert manifest["method"] == name and manifest["fusion"] == fusion
    if layers == ("multiscale",):
        assert len(manifest["layers"]) > 1
