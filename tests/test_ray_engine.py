"""The Ray Data engine gives the local engine's answers, on a local Ray with 2 CPUs and on a simulated two-node cluster,
and finishes a job whose worker dies. Every Ray call is bounded by a timeout (a stalled job fails fast), and nothing
is left running (../shared/notes: declare actors with fractional CPUs on a 2-core machine)."""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from mieruka.audit.run import run_audit
from mieruka.batch.engine import EngineOptions, Item, run_items
from mieruka.explain.run import ExplainWorker, run_explain
from mieruka.explain.scaling import normalize_for_display
from mieruka.model_file import ModelFile
from mieruka.predict import PredictOptions, PredictWorker, predict

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]  # one Ray instance at a time (make test: loadgroup)

T = TypeVar("T")
RAY_TIMEOUT_S = 240
RAY = EngineOptions("ray", workers=2, cpus_per_worker=0.5)
"""Two replicas: the predict test (and the two-node cluster's) show the shards of several replicas merged in order."""
RAY_ONE = EngineOptions("ray", workers=1, cpus_per_worker=1.0)
"""One replica, for the tests of what a replica computes: every replica is a process that imports PyTorch and loads
the model, the most of a small job's time on a 2-core machine that runs other tests beside it."""


def bounded(fn: Callable[[], T]) -> T:
    """``fn()``, failing the test if it takes longer than :data:`RAY_TIMEOUT_S` (a stalled Ray job)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result(timeout=RAY_TIMEOUT_S)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The local engine on one PyTorch thread, as a replica of :data:`RAY` or :data:`RAY_ONE` runs: the same float
    sums, so the rank-based audit figures (AP, rank correlations), which amplify rounding, can be compared exactly."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_predict_on_ray_equals_local(tiny_run: Path, synth_dir: Path, tmp_path: Path, local_ray: None) -> None:
    bad = tmp_path / "in" / "zz_broken.png"
    bad.parent.mkdir()
    bad.write_bytes(b"not a png")
    inputs = [synth_dir / "crack", synth_dir / "good", bad.parent]
    model = tiny_run / "model.safetensors"
    predict(model, inputs, out=tmp_path / "local.csv", progress=False)
    bounded(lambda: predict(model, inputs, out=tmp_path / "ray.csv", progress=False, engine=RAY))
    local, distributed = _rows(tmp_path / "local.csv"), _rows(tmp_path / "ray.csv")
    assert [r["image"] for r in distributed] == [r["image"] for r in local] and len(local) == 17
    for a, b in zip(local, distributed, strict=True):
        assert (a["class"], a["verdict"], a["error"]) == (b["class"], b["verdict"], b["error"])
        if not a["error"]:
            pa = [float(v) for k, v in a.items() if k.startswith("p[")]
            pb = [float(v) for k, v in b.items() if k.startswith("p[")]
            assert np.allclose(pa, pb, atol=1e-5)
    assert distributed[-1]["error"] and not any(r["error"] for r in distributed[:-1])
    assert not list(tmp_path.glob(".*ray-shards"))  # merged and removed


def test_explain_on_ray_equals_local(tiny_run: Path, synth_dir: Path, tmp_path: Path, local_ray: None) -> None:
    model = tiny_run / "model.safetensors"
    a = run_explain(model, [synth_dir], tmp_path / "local", progress=False, normalization="fixed")
    b = bounded(
        lambda: run_explain(model, [synth_dir], tmp_path / "ray", progress=False, normalization="fixed", engine=RAY_ONE)
    )
    assert [r["file"] for r in a.manifest["images"]] == [r["file"] for r in b.manifest["images"]]
    assert a.manifest["fixed_scale"] == pytest.approx(b.manifest["fixed_scale"], abs=1e-4)
    with np.load(tmp_path / "local" / "maps.npz") as ma, np.load(tmp_path / "ray" / "maps.npz") as mb:
        assert sorted(ma.files) == sorted(mb.files) and len(ma.files) == 12
        for key in ma.files:  # stored as float16: equal to its precision
            assert np.allclose(ma[key].astype(np.float32), mb[key].astype(np.float32), rtol=2e-3, atol=1e-5)
    for ra, rb in zip(a.manifest["images"], b.manifest["images"], strict=True):
        assert ra["predicted"] == rb["predicted"] and ra["panel"] == rb["panel"]
        assert np.allclose(list(ra["probabilities"].values()), list(rb["probabilities"].values()), atol=1e-5)
        assert (tmp_path / "ray" / rb["panel"]).is_file()
    # the maps themselves (float32, as the panels are drawn from them) within 1e-4 after display scaling
    paths = sorted(p for p in (synth_dir / "crack").glob("*.png"))
    items = [Item(i, str(p)) for i, p in enumerate(paths)]
    spec = ModelFile.read(model).resolve("gradcam")
    worker = ExplainWorker(str(model), "cpu", "gradcam", spec, "pred", 4)
    maps = {}
    for name, engine in (("local", EngineOptions()), ("ray", RAY_ONE)):
        chunks = bounded(
            lambda engine=engine, name=name: list(
                run_items(worker, items, engine=engine, chunk=3, shard_dir=tmp_path / name, progress=False, desc="")
            )
        )
        maps[name] = [_torch(r.maps) for chunk in chunks for r in chunk]
    for x, y in zip(maps["local"], maps["ray"], strict=True):
        shown_x, shown_y = normalize_for_display(x, "per-image", None), normalize_for_display(y, "per-image", None)
        assert float((shown_x - shown_y).abs().max()) <= 1e-4


def _torch(a: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(a.astype(np.float32))


def test_audit_on_ray_writes_the_local_files(
    tiny_run: Path, synth_dir: Path, tmp_path: Path, local_ray: None, one_thread: None
) -> None:
    model = tiny_run / "model.safetensors"
    options: dict[str, Any] = {"methods": ["gradcam", "layercam"], "faithfulness": 3, "progress": False}
    run_audit(model, synth_dir, tmp_path / "local", **options)
    bounded(lambda: run_audit(model, synth_dir, tmp_path / "ray", engine=RAY_ONE, **options))
    local, distributed = _rows(tmp_path / "local" / "audit.csv"), _rows(tmp_path / "ray" / "audit.csv")
    assert len(local) == 24 and [r["image"] for r in local] == [r["image"] for r in distributed]
    assert local == distributed  # every figure of every row, to its 6 written decimals
    sa = json.loads((tmp_path / "local" / "summary.json").read_text(encoding="utf-8"))
    sb = json.loads((tmp_path / "ray" / "summary.json").read_text(encoding="utf-8"))
    for name in ("regions", "errors", "categories"):
        assert sa[name] == sb[name]
    for method in options["methods"]:
        ga, gb = sa["methods"][method]["all"], sb["methods"][method]["all"]
        assert ga["categories"] == gb["categories"]
        for key in ("energy_inside", "pointing_hit", "average_precision"):
            assert ga[key] == pytest.approx(gb[key], abs=1e-9)
        assert ga["baselines"] == gb["baselines"]  # per-image seeds: the same on any engine
    assert sa["faithfulness"] == sb["faithfulness"]
    assert (tmp_path / "ray" / "report" / "index.html").read_text(encoding="utf-8").count("class='card'") == 24


class _DiesOnce(PredictWorker):
    """A predict worker whose replica process dies (as a killed node would) the first time it gets work."""

    def __init__(self, marker: str, *args: Any) -> None:
        super().__init__(*args)
        self.marker = marker

    def process(self, items: Any) -> Any:
        if not os.path.exists(self.marker):
            Path(self.marker).touch()
            os._exit(1)
        return super().process(items)


def test_a_worker_that_dies_is_replaced_on_a_two_node_cluster(tiny_run: Path, synth_dir: Path, tmp_path: Path) -> None:
    from ray.cluster_utils import Cluster

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test's worker class travels by value
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        assert len([n for n in cluster.list_all_nodes()]) == 2
        paths = sorted(p for p in synth_dir.rglob("*.png") if "masks" not in p.parts)[:24]
        items = [Item(i, str(p)) for i, p in enumerate(paths)]
        options = PredictOptions(device="cpu", batch_size=8)
        worker = _DiesOnce(str(tmp_path / "died"), str(tiny_run / "model.safetensors"), options)
        engine = EngineOptions("ray", address=cluster.address, workers=2, cpus_per_worker=0.5)

        def job() -> list[Any]:
            chunks = run_items(
                worker, items, engine=engine, chunk=4, shard_dir=tmp_path / "shards", progress=False, desc=""
            )
            return [r for chunk in chunks for r in chunk]

        answers = bounded(job)
        assert (tmp_path / "died").exists()  # a replica did die
        assert [str(r.image) for r in answers] == [str(p) for p in paths]  # every image answered once, in order
        reference = predict(tiny_run / "model.safetensors", paths, progress=False, device="cpu")
        for r, expected in zip(answers, reference, strict=True):
            assert r.label == expected.label
            assert np.allclose(list(r.probabilities.values()), list(expected.probabilities.values()), atol=1e-5)
    finally:
        ray.shutdown()
        cluster.shutdown()
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_the_ray_tests_keep_to_one_worker_process(request: pytest.FixtureRequest) -> None:
    """Under `make test` (pytest-xdist, --dist loadgroup) this module's tests carry their group in their node id,
    which keeps them on one worker: one Ray instance at a time. A pytest or pytest-xdist release that loses the mark
    fails here, not as a suite that runs two Ray instances at once on two cores."""
    if not getattr(request.config.option, "loadgroup", False):  # what pytest-xdist sets in a worker
        pytest.skip("not run with pytest-xdist's --dist loadgroup")
    assert request.node.nodeid.endswith("@ray"), request.node.nodeid


def test_replica_plan_defaults() -> None:
    from mieruka.batch.ray_engine import LOCAL_EXTRA_CPUS, replica_plan

    def local(cores: int, **kw: Any) -> tuple[int, float, float]:
        return replica_plan(EngineOptions("ray", **kw), {"CPU": cores + LOCAL_EXTRA_CPUS}, True)

    assert local(2) == (2, 1.0, 0.0)  # one thread each: faster than one replica of two on 2 cores
    assert local(8) == (4, 2.0, 0.0) and local(16) == (4, 4.0, 0.0)  # at most 4 replicas
    assert local(2, workers=1, cpus_per_worker=2) == (1, 2, 0.0)
    cluster = {"CPU": 64.0, "GPU": 8.0}
    assert replica_plan(EngineOptions("ray"), cluster, False, [32.0, 32.0]) == (16, 4.0, 0.0)
    assert replica_plan(EngineOptions("ray"), {"CPU": 2.0}, False, [1.0, 1.0]) == (2, 1.0, 0.0)
    assert replica_plan(EngineOptions("ray", gpus_per_worker=1), cluster, False, [32.0, 32.0]) == (8, 4.0, 1)
    with pytest.raises(ValueError, match="has 8 GPUs"):
        replica_plan(EngineOptions("ray", gpus_per_worker=16), cluster, False, [32.0])


def test_bad_input_met_by_a_replica_is_the_users_error(
    tiny_run: Path, synth_dir: Path, tmp_path: Path, local_ray: None
) -> None:
    """A replica refusing its input (here a layer the model lacks) raises the local engine's error, not Ray's."""
    with pytest.raises(ValueError, match="--layer nolayer: no such module"):
        bounded(
            lambda: run_explain(
                tiny_run / "model.safetensors",
                [synth_dir],
                tmp_path,
                layers=["nolayer"],
                progress=False,
                engine=RAY_ONE,
            )
        )
