from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import CHROMIUM

from mieruka.audit.run import run_audit
from mieruka.audit.summary import AuditSummary
from mieruka.audit.triage import CATEGORIES
from mieruka.cli import main


@pytest.fixture(scope="module")
def audited(tiny_run: Path, synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("audit")
    run_audit(
        tiny_run / "model.safetensors",
        synth_dir,
        out,
        split="test",
        methods=["gradcam", "layercam:multiscale/product"],
        lang="ja",
        progress=False,
    )
    return out


def test_audit_outputs(audited: Path) -> None:
    with open(audited / "audit.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 12  # 12 test images, two methods
    assert {r["method"] for r in rows} == {"gradcam", "layercam:multiscale/product"}
    assert {r["layers"] for r in rows} == {"bn2", "blocks.2,blocks.4,blocks.6,bn2"}
    assert {r["category"] for r in rows} <= set(CATEGORIES)
    good = [r for r in rows if r["true"] == "good"]
    assert good and all(r["category"] == "no_region" and r["energy_inside"] == "" for r in good)
    defects = [r for r in rows if r["true"] != "good"]
    assert all(0 <= float(r["energy_inside"]) <= 1 and float(r["area_fraction"]) > 0 for r in defects)
    summary = json.loads((audited / "summary.json").read_text(encoding="utf-8"))
    assert summary["schema_version"] == 2 and summary["split"] == "test"
    # the gate of predict and the service: the predicted class's verdict, or P(NG) at the model's threshold
    t = summary["ng_threshold"]
    for r in rows:
        gate = r["predicted_verdict"] == "NG" or float(r["ng_probability"]) >= t
        assert r["verdict"] == ("NG" if gate else "OK")
    assert summary["regions"] == {
        "source": "masks",
        "images": 12,
        "matched": 12,  # every synthetic image has a mask file; the good ones are empty
        "with_region": 10,
        "ng_without_region": 0,
    }
    allg = summary["methods"]["gradcam"]["all"]
    # "all" localizes the 6 defect images; the 4 marked OK ones (normal (scratch), normal (dirt)) are scored apart
    assert allg["images"] == 12 and allg["with_region"] == 6
    assert summary["methods"]["gradcam"]["marked_ok"]["with_region"] == 4 and summary["marked_ok_images"] == 4
    gradcam_rows = [r for r in defects if r["method"] == "gradcam" and r["true_verdict"] == "NG"]
    assert allg["energy_inside"] == pytest.approx(sum(float(r["energy_inside"]) for r in gradcam_rows) / 6, rel=1e-4)
    uniform = allg["baselines"]["uniform"]
    assert uniform["energy_inside"] == pytest.approx(sum(float(r["area_fraction"]) for r in gradcam_rows) / 6, rel=1e-4)
    assert set(allg["baselines"]) == {"uniform", "random", "center"}
    # read back typed: the same figures as fields, and written back to the same keys
    typed = AuditSummary.read(audited / "summary.json")
    assert typed.to_json() == summary
    assert typed.figures("gradcam").energy_inside == allg["energy_inside"] and typed.regions.with_region == 10
    assert typed.config.tolerance == summary["config"]["tolerance"] and typed.faithfulness is None
    with open(audited / "review.csv", encoding="utf-8") as fh:
        review = list(csv.DictReader(fh))
    priorities = [float(r["priority"]) for r in review]
    assert priorities == sorted(priorities, reverse=True) and all(r["reasons"] for r in review)


def test_report_is_offline_and_japanese(audited: Path) -> None:
    page = (audited / "report" / "index.html").read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page  # no CDN: works from its folder
    assert "正解" in page and "予測" in page and "混同行列" in page
    assert page.count("class='card'") == 24
    for src in __import__("re").findall(r"src='([^']+)'", page):
        assert (audited / "report" / src).is_file()


def test_report_links_files_outlines_regions_and_lists_every_review_item(
    audited: Path, tiny_run: Path, synth_dir: Path, tmp_path: Path
) -> None:
    import re

    from PIL import Image

    from mieruka.evaluate import evaluate
    from mieruka.explain.render import OUTLINE_RGB

    page = (audited / "report" / "index.html").read_text(encoding="utf-8")
    summary = json.loads((audited / "summary.json").read_text(encoding="utf-8"))
    assert f"しきい値 {summary['ng_threshold']:.3f}" in page  # OK/NG at the calibrated threshold, said so
    evaluate(tiny_run / "model.safetensors", synth_dir, tmp_path / "eval", split="test", device="cpu", progress=False)
    gate = json.loads((tmp_path / "eval" / "metrics.json").read_text())["gate_at_threshold"]
    shown = {label: value for value, label in re.findall(r"<div class='fig'><b>([^<]+)</b>([^<]+)</div>", page)}
    assert shown["見逃し率（NG を合格）"] == f"{100 * gate['escape_rate']:.1f}%"  # the numbers evaluate gives
    assert shown["過検出率（OK を不合格）"] == f"{100 * gate['overkill_rate']:.1f}%"
    for name in ("audit.csv", "summary.json", "review.csv"):
        assert f"href='../{name}'" in page
    assert "id='colorbar'" in page and "0: 根拠なし" in page and page.count("class='sortable'") >= 4
    assert "<th>画像</th>" in page and "<th>image</th>" not in page
    with open(audited / "review.csv", encoding="utf-8") as fh:
        images = list(dict.fromkeys(r["image"] for r in csv.DictReader(fh)))
    listed = re.findall(r"<tr data-image='([^']+)'>", page)
    assert listed == [__import__("html").escape(i, quote=True) for i in images]  # all of them, in rank order
    review = page[page.index("<table id='review'") :].split("</table>")[0]
    assert review.count("<figure>") == 2 * len(images)  # every audited method's panel, side by side
    assert "id='collect'" in page and "次に集めるべきデータ" in page
    assert "と誤分類" in review and not re.search(r"misclassified|confidence|attention|escape:", review)  # 日本語
    # a defect image's panel carries its region's outline; an image without a region has none
    panels = json.loads((audited / "report" / "panels.json").read_text(encoding="utf-8"))["panels"]
    full = {Path(image).parent.name: audited / "report" / f for image, method, _, f in panels if method == "gradcam"}
    magenta = [
        int((np.asarray(Image.open(full[c]).convert("RGB")) == OUTLINE_RGB).all(-1).sum()) for c in ("crack", "good")
    ]
    assert magenta[0] > 20 and magenta[1] == 0


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (make test installs it)")
def test_report_renders_in_a_real_headless_browser(audited: Path, tmp_path: Path) -> None:
    page = (audited / "report" / "index.html").resolve()
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run(
        [CHROMIUM, *flags, "--virtual-time-budget=3000", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert 'id="figures"' in dom and 'id="localization"' in dom and dom.count('class="card') == 24
    shot = tmp_path / "report.png"
    subprocess.run(
        [CHROMIUM, *flags, "--window-size=1280,2000", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    from PIL import Image

    img = Image.open(shot).convert("L")
    assert img.size == (1280, 2000)
    assert len(np.unique(np.asarray(img.resize((64, 100))))) > 20  # something was drawn, not a blank page


def test_audit_command(tiny_run: Path, synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "audit",
                str(tiny_run / "model.safetensors"),
                str(synth_dir),
                "--out",
                str(tmp_path),
                "--method",
                "gradcam,eigencam",
                "--quiet",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "gradcam" in out and "eigencam" in out and "report" in out
    assert (tmp_path / "report" / "index.html").is_file()


def test_audit_uses_box_annotations(tiny_run: Path, synth_dir: Path, tmp_path: Path) -> None:
    """--boxes: a folder of VOC files replaces the masks; each region is its box, rasterized at full size."""
    import csv

    import numpy as np

    from mieruka.data.images import read_mask

    boxes = tmp_path / "voc"
    boxes.mkdir()
    expected = {}
    for mask_path in sorted((synth_dir / "masks" / "crack").glob("*.png"))[:4]:
        m = read_mask(mask_path)
        if not m.any():
            continue
        rows, cols = np.nonzero(m)
        x0, x1, y0, y1 = cols.min() + 1, cols.max() + 1, rows.min() + 1, rows.max() + 1  # VOC: 1-based, inclusive
        (boxes / f"{mask_path.stem}.xml").write_text(
            f"<annotation><object><name>crack</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
            f"<ymax>{y1}</ymax></bndbox></object></annotation>",
            encoding="utf-8",
        )
        expected[mask_path.stem] = (x1 - x0 + 1) * (y1 - y0 + 1) / m.size
    assert expected
    run_audit(
        tiny_run / "model.safetensors",
        synth_dir,
        tmp_path / "a",
        split="all",
        boxes=boxes,
        report=False,
        device="cpu",
        progress=False,
    )
    with open(tmp_path / "a" / "audit.csv", encoding="utf-8") as fh:
        rows_out = list(csv.DictReader(fh))
    with_region = {Path(r["image"]).stem: float(r["area_fraction"]) for r in rows_out if r["area_fraction"]}
    assert set(with_region) == set(expected)
    for stem, area in expected.items():
        assert with_region[stem] == pytest.approx(area, abs=1e-6)


def test_report_command_rebuilds_the_page(audited: Path, tmp_path: Path) -> None:
    """`mieruka report DIR --lang en` writes the (Japanese) audit's page again in English, with the same gallery."""
    from mieruka.cli import main

    copy = tmp_path / "copy"
    shutil.copytree(audited, copy)
    before = (copy / "report" / "index.html").read_text(encoding="utf-8")
    assert main(["report", str(copy), "--lang", "en"]) == 0
    after = (copy / "report" / "index.html").read_text(encoding="utf-8")
    assert "<html lang='ja'>" in before and "<html lang='en'>" in after
    assert "true: " in after and "正解: " not in after
    assert after.count("class='card'") == before.count("class='card'") > 0
    assert main(["report", str(tmp_path / "nothing")]) == 2


def _manifest_with_bad_files(synth_dir: Path, tmp_path: Path) -> Path:
    """Six test images of the synthetic set, one truncated image and one image whose mask file is garbage."""
    import csv

    rows = []
    for label in ("crack", "blowhole", "good"):
        for image in sorted((synth_dir / label).glob("*.png"))[:2]:
            rows.append((str(image), label, str(synth_dir / "masks" / label / image.name), "test"))
    broken = tmp_path / "broken.png"
    broken.write_bytes((synth_dir / "crack" / "crack_0000.png").read_bytes()[:90])
    bad_mask = tmp_path / "bad_mask.png"
    bad_mask.write_bytes(b"not a mask")
    rows.insert(2, (str(broken), "crack", str(synth_dir / "masks" / "crack" / "crack_0000.png"), "test"))
    rows.append((str(synth_dir / "scratch" / "scratch_0000.png"), "scratch", str(bad_mask), "test"))
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([("image", "label", "mask", "split"), *rows])
    return manifest


def test_bad_images_become_error_rows(tiny_run: Path, synth_dir: Path, tmp_path: Path) -> None:
    import csv

    from mieruka.errors import DataError

    manifest = _manifest_with_bad_files(synth_dir, tmp_path)
    model = tiny_run / "model.safetensors"
    run = run_audit(model, manifest, tmp_path / "a", methods=["gradcam", "layercam"], progress=False)
    with open(tmp_path / "a" / "audit.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 8 and [r["method"] for r in rows] == ["gradcam"] * 8 + ["layercam"] * 8
    bad = [r for r in rows if r["error"]]
    assert {Path(r["image"]).name for r in bad} == {"broken.png", "scratch_0000.png"} and len(bad) == 4
    assert all(r["category"] == "" and r["predicted"] == "" for r in bad)
    assert "bad_mask.png" in next(r["error"] for r in bad if "scratch" in r["image"])
    assert run.summary.errors.images == 2 and "broken.png" in (run.summary.errors.first or "")
    assert run.summary.figures("gradcam").images == 6 and run.summary.regions.images == 8
    page = (tmp_path / "a" / "report" / "index.html").read_text(encoding="utf-8")
    assert page.count("class='card'") == 12
    with pytest.raises(DataError, match="broken.png"):
        run_audit(model, manifest, tmp_path / "b", strict=True, report=False, progress=False)
    assert (
        main(["audit", str(model), str(manifest), "--out", str(tmp_path / "c"), "--method", "gradcam", "--quiet"]) == 0
    )


def test_the_exported_file_audits_like_the_checkpoint(
    tiny_run: Path, tiny_onnx: Path, synth_dir: Path, tmp_path: Path
) -> None:
    """audit MODEL.onnx --method gradcam gives the checkpoint's audit.csv: the same classes and probabilities
    (1e-4), the same ranking metrics (pointing, AP: invariant to the graph's min–max scaling; 1e-3 for float32
    ties). Energy and thresholded metrics are scored on the graph's min–max-scaled map, which equals the raw one only
    when the raw map reaches 0 — as Magnetic Tile's trained model's do (the two files agreed to 1e-6 there), but not
    this tiny random model's. Methods the graph does not compute are refused."""
    import csv

    from mieruka.audit.run import run_audit
    from mieruka.errors import MierukaError

    options = {"methods": ["gradcam"], "progress": False, "device": "cpu", "report": False}
    run_audit(tiny_run / "model.safetensors", synth_dir, tmp_path / "st", **options)
    run_audit(tiny_onnx, synth_dir, tmp_path / "onnx", **options)
    rows = [list(csv.DictReader((tmp_path / n / "audit.csv").open(encoding="utf-8"))) for n in ("st", "onnx")]
    assert len(rows[0]) == len(rows[1]) > 0 and rows[0][0].keys() == rows[1][0].keys()
    same = ("image", "method", "layers", "true", "predicted", "correct", "verdict", "error")
    close = {"probability": 1e-4, "true_probability": 1e-4, "ng_probability": 1e-4}
    close |= {"average_precision": 1e-3}
    same += ("pointing_hit",)
    for a, b in zip(*rows, strict=True):
        assert [a[k] for k in same] == [b[k] for k in same]
        for key, tol in close.items():
            if a[key] or b[key]:
                assert abs(float(a[key]) - float(b[key])) <= tol, key
    with pytest.raises(MierukaError, match="computes the gradcam map of the predicted class only"):
        run_audit(tiny_onnx, synth_dir, tmp_path / "x", **{**options, "methods": ["layercam"]})


def test_a_summary_of_a_newer_schema_is_refused(audited: Path, tmp_path: Path) -> None:
    from mieruka.errors import DataError

    summary = json.loads((audited / "summary.json").read_text(encoding="utf-8"))
    newer = tmp_path / "summary.json"
    newer.write_text(json.dumps({**summary, "schema_version": 3}), encoding="utf-8")
    with pytest.raises(DataError, match="schema version 3; this mieruka reads up to 2"):
        AuditSummary.read(newer)
    newer.write_text(json.dumps({k: v for k, v in summary.items() if k != "regions"}), encoding="utf-8")
    with pytest.raises(DataError, match="not an audit summary"):
        AuditSummary.read(newer)
