from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mieruka.errors import DataError
from mieruka.predict import collect_images, predict


def test_predict_folder_and_file(tiny_run: Path, synth_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "preds.csv"
    results = predict(
        tiny_run / "model.safetensors",
        [synth_dir / "crack", synth_dir / "good" / "good_0000.png"],
        out=out,
        progress=False,
    )
    assert len(results) == 9
    with open(out, encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["image"] for r in rows] == [r.image for r in results]
    for r, row in zip(results, rows, strict=True):
        assert row["class"] == r.label
        assert r.probability == max(r.probabilities.values())
        assert list(r.probabilities) == list(_classes(tiny_run))
        assert r.verdict == ("NG" if r.ng_probability >= 0.0 + float(_threshold(tiny_run)) else "OK")


def _classes(run: Path) -> tuple[str, ...]:
    from mieruka.checkpoint import read_info

    return read_info(run / "model.safetensors").classes


def _threshold(run: Path) -> float:
    from mieruka.checkpoint import read_info

    t = read_info(run / "model.safetensors").ng_threshold
    assert t is not None
    return t


def test_explicit_threshold_overrides(tiny_run: Path, synth_dir: Path) -> None:
    always = predict(tiny_run / "model.safetensors", [synth_dir / "good"], threshold=0.0, progress=False)
    never = predict(tiny_run / "model.safetensors", [synth_dir / "good"], threshold=1.01, progress=False)
    assert {r.verdict for r in always} == {"NG"} and {r.verdict for r in never} == {"OK"}


def test_bad_inputs_are_named(tiny_run: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nothing.png: no such file"):
        collect_images([tmp_path / "nothing.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: the folder holds no images"):
        collect_images([tmp_path / "empty"])
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataError, match="broken.png"):
        predict(tiny_run / "model.safetensors", [bad], progress=False)


def _folder_with_bad_files(synth_dir: Path, tmp_path: Path) -> Path:
    import shutil

    folder = tmp_path / "imgs"
    shutil.copytree(synth_dir / "crack", folder)
    (folder / "zz_truncated.png").write_bytes((folder / "crack_0000.png").read_bytes()[:100])
    (folder / "zz_empty.png").write_bytes(b"")
    return folder


def test_unreadable_images_become_rows_with_an_error(tiny_run: Path, synth_dir: Path, tmp_path: Path) -> None:
    import csv

    folder = _folder_with_bad_files(synth_dir, tmp_path)
    out = tmp_path / "p.csv"
    run = predict(tiny_run / "model.safetensors", [folder], out=out, progress=False)
    assert run.images == 10 and run.errors == 2 and run.ok + run.ng == 8
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["image"] for r in rows] == [str(p) for p in sorted(folder.iterdir())]
    bad = {Path(r["image"]).name: r for r in rows if r["error"]}
    assert set(bad) == {"zz_truncated.png", "zz_empty.png"} and "0 bytes" in bad["zz_empty.png"]["error"]
    assert all(r["class"] and r["verdict"] in ("OK", "NG") for r in rows if not r["error"])
    with pytest.raises(DataError, match="zz_empty.png"):
        predict(tiny_run / "model.safetensors", [folder], strict=True, progress=False)
    with pytest.raises(DataError, match="none of the 1 images could be read"):
        predict(tiny_run / "model.safetensors", [folder / "zz_empty.png"], progress=False)


def test_predict_streams_in_chunks_with_the_same_answers(
    tiny_run: Path, synth_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mieruka.predict as predict_module

    whole = predict(tiny_run / "model.safetensors", [synth_dir / "crack"], progress=False)
    import mieruka.inference as inference_module

    calls = []
    original = inference_module.ImageStore

    def store(paths, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(len(paths))
        return original(paths, *args, **kwargs)

    monkeypatch.setattr(inference_module, "ImageStore", store)
    # 8 images in chunks of 3, 3 and 2
    monkeypatch.setattr(predict_module, "PREDICT_CHUNK", 3)
    chunked = predict(tiny_run / "model.safetensors", [synth_dir / "crack"], progress=False)
    assert calls == [3, 3, 2]  # never more than one chunk of pixels in memory
    for a, b in zip(whole, chunked, strict=True):
        assert a.image == b.image and a.label == b.label and a.verdict == b.verdict
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-6)


def test_resume_skips_what_a_killed_run_wrote(tiny_run: Path, synth_dir: Path, tmp_path: Path, monkeypatch) -> None:
    import csv

    import mieruka.predict as predict_module

    out = tmp_path / "p.csv"
    original = predict_module.PredictWorker.process
    calls = []

    def killed_in_the_second_chunk(self, items):  # type: ignore[no-untyped-def]
        calls.append(len(items))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, items)

    monkeypatch.setattr(predict_module, "PREDICT_CHUNK", 3)
    monkeypatch.setattr(predict_module.PredictWorker, "process", killed_in_the_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        predict(tiny_run / "model.safetensors", [synth_dir / "crack"], out=out, progress=False)
    monkeypatch.setattr(predict_module.PredictWorker, "process", original)
    with open(out, newline="", encoding="utf-8") as fh:
        assert len(list(csv.DictReader(fh))) == 3  # the finished chunk survived the kill
    run = predict(tiny_run / "model.safetensors", [synth_dir / "crack"], out=out, resume=True, progress=False)
    assert run.skipped == 3 and run.images == 5
    with open(out, newline="", encoding="utf-8") as fh:
        images = [r["image"] for r in csv.DictReader(fh)]
    assert images == [str(p) for p in sorted((synth_dir / "crack").iterdir())]  # each image answered once


def test_parquet_output(tiny_run: Path, synth_dir: Path, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "p.parquet"
    predict(tiny_run / "model.safetensors", [synth_dir / "crack"], out=out, progress=False, keep=False)
    table = pq.read_table(out)
    assert table.num_rows == 8 and {"image", "class", "verdict", "error"} <= set(table.column_names)


def test_predict_without_an_output_leaves_no_temporary_folder(
    tiny_run: Path, synth_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where mkdtemp and gettempdir look
    run = predict(tiny_run / "model.safetensors", [synth_dir / "crack"], progress=False)
    assert run.images == 8 and list(tmp_path.iterdir()) == []
