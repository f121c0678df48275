from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mieruka.cli import main
from mieruka.explain import methods_table
from mieruka.explain.run import run_explain


def test_defaults_reproduce_the_papers_experiment(tiny_run: Path, synth_dir: Path, tmp_path: Path) -> None:
    run = run_explain(tiny_run / "model.safetensors", [synth_dir], tmp_path, progress=False)
    m = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    assert m == run.manifest
    assert m["schema_version"] == 1 and m["method"] == "gradcam" and m["target"] == "true"
    assert m["layers"] == ["bn2"] and m["split"] == "val"
    assert len(m["images"]) == 12  # every validation image: 2 per class
    maps = np.load(tmp_path / "maps.npz")
    for rec in m["images"]:
        assert rec["explained_class"] == [rec["true"]]  # the map of the true class
        assert rec["fast_path"] is True
        arr = maps[rec["map_key"]]
        assert arr.dtype == np.float16 and arr.shape == (1, 64, 64) and (arr >= 0).all()
        pic = Image.open(tmp_path / rec["panel"])
        w, h = rec["original_size"]
        assert pic.width > 2 * 256 * w / h  # input and overlay side by side at 256 px height
        assert abs(sum(rec["probabilities"].values()) - 1) < 1e-4
    assert (tmp_path / "grid.png").is_file()


def test_all_classes_ng_target_and_bare_images(tiny_run: Path, synth_dir: Path, tmp_path: Path) -> None:
    run = run_explain(
        tiny_run / "model.safetensors",
        [synth_dir],
        tmp_path / "a",
        target="all",
        split="test",
        normalization="fixed",
        progress=False,
    )
    assert run.manifest["fixed_scale"] > 0
    assert np.load(tmp_path / "a" / "maps.npz")["00000"].shape == (6, 64, 64)
    run = run_explain(
        tiny_run / "model.safetensors",
        [synth_dir / "crack" / "crack_0000.png"],
        tmp_path / "b",
        target="ng",
        progress=False,
    )
    rec = run.manifest["images"][0]
    assert rec["true"] is None and rec["explained_class"] == [None]
    with pytest.raises(ValueError, match="--target true needs images with known classes"):
        run_explain(tiny_run / "model.safetensors", [synth_dir / "crack"], tmp_path / "c", progress=False)
    with pytest.raises(ValueError, match="--target 'dent'"):
        run_explain(tiny_run / "model.safetensors", [synth_dir], tmp_path / "d", target="dent", progress=False)


@pytest.mark.parametrize("method", ["layercam", "eigencam", "gradcam++"])
def test_cli_methods_and_layers(method: str, tiny_run: Path, synth_dir: Path, tmp_path: Path) -> None:
    args = [
        "explain",
        str(tiny_run / "model.safetensors"),
        str(synth_dir),
        "--out",
        str(tmp_path),
        "--method",
        method,
        "--split",
        "test",
        "--quiet",
    ]
    if method == "layercam":
        args += ["--layer", "blocks.5,bn2"]
    assert main(args) == 0
    m = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    assert m["method"] == method and len(m["images"]) == 12
    assert m["layers"] == (["blocks.5", "bn2"] if method == "layercam" else ["bn2"])


def test_methods_table_in_readme_is_generated_from_the_registry() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert methods_table() in readme


def test_cli_defaults_match_the_library(tiny_run: Path, synth_dir: Path, tmp_path: Path) -> None:
    assert (
        main(["explain", str(tiny_run / "model.safetensors"), str(synth_dir), "--out", str(tmp_path), "--quiet"]) == 0
    )
    m = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    assert (m["method"], m["target"], m["split"], m["normalization"]) == ("gradcam", "true", "val", "per-image")


def test_unreadable_images_are_listed_not_fatal(tiny_run: Path, synth_dir: Path, tmp_path: Path) -> None:
    import shutil

    from mieruka.errors import DataError

    folder = tmp_path / "in"
    shutil.copytree(synth_dir / "crack", folder)
    (folder / "crack_0003.png").write_bytes(b"")
    run = run_explain(tiny_run / "model.safetensors", [folder], tmp_path / "x", target="pred", progress=False)
    records = run.manifest["images"]
    assert run.manifest["errors"] == 1 and len(records) == 8
    bad = records[3]
    assert bad["file"].endswith("crack_0003.png") and "0 bytes" in bad["error"] and "panel" not in bad
    with np.load(tmp_path / "x" / "maps.npz") as maps:
        assert sorted(maps.files) == sorted(r["map_key"] for r in records if not r["error"]) and len(maps.files) == 7
    assert all((tmp_path / "x" / r["panel"]).is_file() for r in records if not r["error"])
    with pytest.raises(DataError, match="crack_0003.png"):
        run_explain(
            tiny_run / "model.safetensors", [folder], tmp_path / "y", target="pred", strict=True, progress=False
        )
    with pytest.raises(DataError, match="none of the 1 images"):
        run_explain(tiny_run / "model.safetensors", [folder / "crack_0003.png"], tmp_path / "z", target="pred",
                    progress=False)  # fmt: skip


def test_the_exported_file_explains_like_the_checkpoint(
    tiny_run: Path, tiny_onnx: Path, synth_dir: Path, tmp_path: Path
) -> None:
    """explain MODEL.onnx: the graph's map of the predicted class equals the checkpoint's Grad-CAM (min–max
    scaled) within float16 storage rounding; anything the graph does not compute is refused by name."""
    import numpy as np

    from mieruka.errors import MierukaError
    from mieruka.explain.run import run_explain
    from mieruka.explain.scaling import minmax_np

    options = {"target": "pred", "split": "test", "progress": False, "device": "cpu"}
    st = run_explain(tiny_run / "model.safetensors", [synth_dir], tmp_path / "st", **options)
    ox = run_explain(tiny_onnx, [synth_dir], tmp_path / "onnx", **options)
    assert [(r["file"], r["predicted"]) for r in st.manifest["images"]] == [
        (r["file"], r["predicted"]) for r in ox.manifest["images"]
    ]
    a, b = np.load(tmp_path / "st" / "maps.npz"), np.load(tmp_path / "onnx" / "maps.npz")
    assert sorted(a.files) == sorted(b.files) and a.files
    # maps.npz stores float16: the raw maps round to 2^-9 where they reach 2 to 4
    assert max(float(np.abs(minmax_np(a[k][0].astype(np.float32)) - b[k][0]).max()) for k in a.files) < 5e-3
    for bad in ({"target": "true"}, {"method": "gradcam++"}, {"layers": ["bn2"]}):
        with pytest.raises(MierukaError, match="computes the gradcam map of the predicted class only"):
            run_explain(tiny_onnx, [synth_dir], tmp_path / "x", **{**options, **bad})
