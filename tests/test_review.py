"""The review loop: the report escapes what the data names, ``mieruka review`` keeps decisions in decisions.csv, and
``mieruka train --corrections`` applies them."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import CHROMIUM, TINY, browser_page, served
from fastapi.testclient import TestClient

from mieruka.audit.collect import what_to_collect
from mieruka.audit.decisions import Decision, DecisionLog, read_decisions
from mieruka.audit.run import run_audit
from mieruka.audit.text import TEXT
from mieruka.cli import main
from mieruka.data.dataset import load_dataset
from mieruka.errors import DataError
from mieruka.serve.review import create_review_app
from mieruka.train.corrections import apply_corrections

EVIL = "</script><img src=x onerror=alert(1)>"
"""A class name that breaks a page built from unescaped strings (and runs script in it)."""

_TRAIN_FAST = ["--pretrained", "none", "--image-size", "64", "--epochs", "1", "--batch-size", "8", "--patience", "0",
               "--freeze-stages", "0", "--guide", "none", "--explain-method", "gradcam", "--quiet"]  # fmt: skip


def _manifest(synth_dir: Path, path: Path) -> Path:
    """good, blowhole and crack (renamed to :data:`EVIL`), 4 train / 2 val / 2 test images each, with masks."""
    rows = []
    for folder, label in (("good", "good"), ("blowhole", "blowhole"), ("crack", EVIL)):
        for n, image in enumerate(sorted((synth_dir / folder).glob("*.png"))):
            split = "train" if n < 4 else "val" if n < 6 else "test"
            rows.append((str(image), label, str(synth_dir / "masks" / folder / image.name), split))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([("image", "label", "mask", "split"), *rows])
    return path


@pytest.fixture(scope="module")
def evil_audit(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(manifest, audit folder) of a tiny model trained on data with the class :data:`EVIL`."""
    from mieruka.train import train

    root = tmp_path_factory.mktemp("evil")
    manifest = _manifest(synth_dir, root / "manifest.csv")
    train(manifest, root / "run", replace(TINY, epochs=1), progress=False)
    out = root / "audit"
    run_audit(root / "run" / "model.safetensors", manifest, out, split="test", methods=["gradcam", "gradcam++"],
              progress=False)  # fmt: skip
    return manifest, out


def test_report_shows_a_hostile_class_name_only_escaped(evil_audit: tuple[Path, Path]) -> None:
    page = (evil_audit[1] / "report" / "index.html").read_text(encoding="utf-8")
    assert EVIL not in page and "<img src=x" not in page
    assert "&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert page.count("</script>") == page.count("<script")  # only the page's own script elements close
    data = re.search(r"<script type='application/json' id='summary-data'>(.*?)</script>", page, re.S)
    assert data is not None and EVIL in json.loads(data.group(1))["methods"]["gradcam"]


def test_review_service_keeps_decisions_across_a_restart(evil_audit: tuple[Path, Path]) -> None:
    audit = evil_audit[1]
    log = audit / "decisions.csv"
    log.unlink(missing_ok=True)
    review = list(csv.DictReader((audit / "review.csv").open(encoding="utf-8")))
    first, second = review[0]["image"], next(r["image"] for r in review if r["image"] != review[0]["image"])
    with TestClient(create_review_app(audit)) as client:
        assert client.get("/").text == (audit / "report" / "index.html").read_text(encoding="utf-8")
        assert client.get("/api/decisions").json()["decisions"] == []
        assert client.post("/api/decisions", json={"image": first, "decision": "exclude"}).status_code == 200
        ok = client.post("/api/decisions", json={"image": second, "decision": "relabel", "label": "good"})
        assert ok.status_code == 200 and ok.json()["saved"]["label"] == "good"
        refused = {
            "nope": client.post("/api/decisions", json={"image": first, "decision": "maybe"}),
            "class": client.post("/api/decisions", json={"image": first, "decision": "relabel", "label": "fray"}),
            "image": client.post("/api/decisions", json={"image": "/elsewhere.png", "decision": "correct"}),
        }
        assert [r.status_code for r in refused.values()] == [422, 422, 404]
        assert "choose one of correct, relabel, region_wrong, exclude" in refused["nope"].json()["detail"]
        assert "'fray': no such class" in refused["class"].json()["detail"]
        assert client.get("/audit.csv").status_code == 200 and client.get("/decisions.csv").status_code == 200
        thumb = re.search(r"src='(thumbs/[^']+)'", client.get("/").text)
        assert thumb and client.get("/" + thumb.group(1)).headers["content-type"] == "image/jpeg"
    with TestClient(create_review_app(audit)) as client:  # a new server on the same folder
        client.post("/api/decisions", json={"image": first, "decision": "correct", "comment": "ok after all"})
        now = {d["image"]: d for d in client.get("/api/decisions").json()["decisions"]}
    assert now[first]["decision"] == "correct" and now[first]["comment"] == "ok after all"
    assert now[second]["decision"] == "relabel" and now[second]["label"] == "good"
    lines = list(csv.reader(log.open(encoding="utf-8")))
    assert lines[0] == ["image", "decision", "label", "comment", "time"] and len(lines) == 4  # appended, not rewritten
    log.unlink()


def test_decisions_file_is_checked_line_by_line(tmp_path: Path) -> None:
    path = tmp_path / "decisions.csv"
    DecisionLog(path, ["a", "b"]).add(Decision("x.png", "relabel", "b"))
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("y.png,delete,,,\n")
    with pytest.raises(DataError, match=r"decisions.csv line 3: decision 'delete' for y.png"):
        read_decisions(path)
    with pytest.raises(DataError, match="relabel of x.png to 'c': no such class"):
        DecisionLog(path, ["a", "b"]).add(Decision("x.png", "relabel", "c"))


def test_corrections_relabel_exclude_and_name_unknown_rows(synth_dir: Path, tmp_path: Path) -> None:
    manifest = _manifest(synth_dir, tmp_path / "m.csv")
    dataset = load_dataset(manifest)
    images = [s.image for s in dataset.samples]
    path = tmp_path / "decisions.csv"
    log = DecisionLog(path, dataset.classes)
    log.add(Decision(str(images[0]), "relabel", "blowhole"))
    log.add(Decision(str(images[1]), "exclude"))
    log.add(Decision(str(images[2]), "region_wrong"))
    log.add(Decision(str(images[3]), "relabel", "good"))  # good already: no change
    fixed, record = apply_corrections(dataset, path)
    by_image = {s.image: s for s in fixed.samples}
    assert by_image[images[0]].label == "blowhole" and by_image[images[0]].verdict == "NG"
    assert images[1] not in by_image and by_image[images[2]].mask is None and by_image[images[3]].label == "good"
    assert len(fixed.samples) == len(dataset.samples) - 1
    assert record["relabel"] == 2 and record["exclude"] == 1 and record["region_wrong"] == 1
    assert [c["decision"] for c in record["changes"]] == ["relabel", "exclude", "region_wrong"]
    log.add(Decision("/not/here.png", "exclude"))
    with pytest.raises(DataError, match=r"1 decision\(s\) name images that are not in .*: line 6 \(/not/here.png\)"):
        apply_corrections(dataset, path)


def test_what_to_collect_names_the_kind_category_and_traits() -> None:
    t = TEXT["en"]

    def row(image: str, true: str, pred: str, verdict: str, category: str, brightness: float) -> dict:
        tv = "OK" if true == "free" else "NG"
        pv = "OK" if pred == "free" else "NG"
        return {"image": image, "true": true, "predicted": pred, "true_verdict": tv, "predicted_verdict": pv,
                "verdict": verdict, "category": category, "brightness": brightness, "area_fraction": 0.01}  # fmt: skip

    rows = [row(f"f{i}.png", "fray", "fray", "NG", "correct_on_target", 0.5 + i / 100) for i in range(6)]
    rows += [row("d1.png", "fray", "free", "OK", "wrong_off_target", 0.1),
             row("d2.png", "fray", "free", "OK", "wrong_off_target", 0.12),
             row("c1.png", "crack", "crack", "NG", "correct_off_target", 0.5)]  # fmt: skip
    groups = what_to_collect(rows, ["crack", "fray", "free"], t)
    assert [(g.cls, g.kind, g.category, g.images) for g in groups] == [
        ("crack", "wrong_reason", "correct_off_target", ("c1.png",)),
        ("fray", "escape", "wrong_off_target", ("d1.png", "d2.png")),
    ]
    assert groups[1].sentence == (
        "fray: 2 escaped (NG passed), wrong, attention off the defect, all dark exposures, mostly taken for free — "
        "collect more fray images like these (dark exposures) and mark their defect regions"
    )
    assert groups[1].traits == ("dark",) and groups[0].traits == ()  # one crack image: no quartiles to compare
    assert groups[0].sentence.startswith("crack: 1 correct for the wrong reason — mark the defect regions of crack")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (make test installs it)")
def test_review_loop_in_a_real_browser(evil_audit: tuple[Path, Path], tmp_path: Path) -> None:
    """Open the review page, decide two items, restart the server and find them kept; retrain with the decisions
    and find the relabel in the run's split and config."""
    manifest, audit = evil_audit
    (audit / "decisions.csv").unlink(missing_ok=True)
    with browser_page() as (page, errors):
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        with served(create_review_app(audit)) as url:
            page.goto(url)
            page.wait_for_selector("body.reviewing")
            rows = page.locator("#review tbody tr")
            assert rows.count() >= 2
            picked = [rows.nth(i).get_attribute("data-image") for i in (0, 1)]
            rows.nth(0).locator(".d-kind").select_option("relabel")
            rows.nth(0).locator(".d-label").select_option("good")
            rows.nth(0).locator(".d-comment").fill("a good part")
            rows.nth(0).locator(".d-save").click()
            rows.nth(1).locator(".d-kind").select_option("exclude")
            rows.nth(1).locator(".d-save").click()
            page.wait_for_function(
                "[...document.querySelectorAll('#review .status')].filter(e => e.textContent).length == 2"
            )
        with served(create_review_app(audit)) as url:  # a restart: the page reads the decisions back
            page.goto(url)
            page.wait_for_selector("body.reviewing")
            row = page.locator(f"#review tbody tr[data-image='{picked[0]}']")
            assert row.locator(".d-kind").input_value() == "relabel"
            assert row.locator(".d-label").input_value() == "good"
            assert row.locator(".d-comment").input_value() == "a good part"
            other = page.locator(f"#review tbody tr[data-image='{picked[1]}'] .d-kind")
            assert other.input_value() == "exclude"
            page.click("#review th:nth-child(3)")  # sorts by the true class without an error
            link = page.locator("#files a[href='decisions.csv']")
            assert link.count() == 1 and "exclude" in page.request.get(url + "decisions.csv").text()
        assert not errors and not dialogs, (errors, dialogs)
    run = tmp_path / "run"
    corrections = str(audit / "decisions.csv")
    assert main(["train", str(manifest), "--out", str(run), "--corrections", corrections, *_TRAIN_FAST]) == 0
    saved = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert saved["config"]["corrections"] == corrections
    assert saved["corrections"]["relabel"] == 1 and saved["corrections"]["exclude"] == 1
    split = {r["image"]: r for r in csv.DictReader((run / "split.csv").open(encoding="utf-8"))}
    by_name = {Path(k).name: v for k, v in split.items()}
    assert by_name[Path(picked[0]).name]["label"] == "good"
    assert Path(picked[1]).name not in by_name


def test_review_command_serves_the_folder_and_names_a_wrong_one(
    evil_audit: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append({"app": app, **kw}))
    assert main(["review", str(evil_audit[1]), "--port", "8123"]) == 0
    assert calls[0]["port"] == 8123 and calls[0]["host"] == "127.0.0.1"
    assert TestClient(calls[0]["app"]).get("/api/decisions").status_code == 200
    assert "decisions.csv" in capsys.readouterr().out
    assert main(["review", str(evil_audit[1]), "--host", "0.0.0.0"]) == 0
    assert "anyone who can reach this port" in capsys.readouterr().err
    assert main(["review", str(tmp_path)]) == 2
    assert "not an audit folder with a report" in capsys.readouterr().err


def test_a_missing_extra_is_named(evil_audit: tuple[Path, Path], monkeypatch, capsys) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "fastapi_offline", None)  # as if mieruka[serve] were not installed
    monkeypatch.delitem(sys.modules, "mieruka.serve.review", raising=False)
    monkeypatch.delitem(sys.modules, "mieruka.serve", raising=False)
    monkeypatch.delitem(sys.modules, "mieruka.serve.app", raising=False)
    assert main(["review", str(evil_audit[1])]) == 2
    assert "pip install 'mieruka[serve]'" in capsys.readouterr().err


def test_rule5_nothing_the_review_service_accepts_breaks_a_later_read(evil_audit: tuple[Path, Path]) -> None:
    """A comment over the limit and a body over the limit are JSON 413s; what was accepted reads back, in the
    service, after a restart and in ``train --corrections``."""
    from mieruka.audit.decisions import MAX_COMMENT
    from mieruka.serve.review import MAX_BODY

    audit = evil_audit[1]
    (audit / "decisions.csv").unlink(missing_ok=True)
    image = next(csv.DictReader((audit / "review.csv").open(encoding="utf-8")))["image"]
    with TestClient(create_review_app(audit)) as client:
        long = client.post("/api/decisions", json={"image": image, "decision": "correct", "comment": "x" * 10_000})
        assert long.status_code == 413 and f"at most {MAX_COMMENT}" in long.json()["detail"]
        huge = client.post("/api/decisions", json={"image": image, "decision": "correct", "comment": "x" * 200_000})
        assert huge.status_code == 413 and "larger than 64 KiB" in huge.json()["detail"]
        big = client.post(
            "/api/decisions", content=b"{" + b" " * (MAX_BODY + 10) + b"}", headers={"content-type": "application/json"}
        )
        assert big.status_code == 413 and "larger than" in big.json()["detail"]
        kept = client.post("/api/decisions", json={"image": image, "decision": "correct", "comment": "y" * MAX_COMMENT})
        assert kept.status_code == 200
        assert client.get("/api/decisions").status_code == 200
    with TestClient(create_review_app(audit)) as client:
        assert client.get("/api/decisions").json()["decisions"][0]["comment"] == "y" * MAX_COMMENT
    assert read_decisions(audit / "decisions.csv")[0][1].comment == "y" * MAX_COMMENT
    (audit / "decisions.csv").unlink()


def test_rule5_every_csv_people_hand_us_is_read_by_one_reader(tmp_path: Path, synth_dir: Path) -> None:
    """Excel's UTF-8 with a byte-order mark reads everywhere; another encoding is refused naming the file, for
    manifests and decisions files alike; a field beyond Python's default limit reads too."""
    rows = "image,decision,label,comment,time\r\ncrack/a.png,exclude,,ちょっと,\r\n"
    bom = tmp_path / "excel.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + rows.encode("utf-8"))
    assert read_decisions(bom)[0][1].decision == "exclude"
    sjis = tmp_path / "sjis.csv"
    sjis.write_bytes(rows.encode("shift_jis"))
    with pytest.raises(DataError, match=r"sjis\.csv: not UTF-8 text .* save it as UTF-8"):
        read_decisions(sjis)
    image = next((synth_dir / "good").glob("*.png"))
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(f"image,label\r\n{image},良品\r\n".encode("shift_jis"))
    with pytest.raises(DataError, match=r"m\.csv: not UTF-8 text"):
        load_dataset(manifest)
    manifest.write_bytes(
        b"\xef\xbb\xbf" + f"image,label,split\r\n{image},良品,train\r\n{image},良品,train\r\n".encode()
    )
    assert load_dataset(manifest).classes == ("良品",)
    wide = tmp_path / "wide.csv"
    wide.write_text(f"image,decision,label,comment,time\ncrack/a.png,correct,,{'z' * 200_000},\n", encoding="utf-8")
    assert len(read_decisions(wide)[0][1].comment) == 200_000
