"""``torchrun --nproc-per-node 2 -m mieruka train``: DistributedDataParallel on 2 CPU processes (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mieruka.checkpoint import read_info

pytestmark = pytest.mark.slow

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def _run(args: list[str], timeout: int = 420) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


def test_two_processes_train_one_model_and_resume(synth_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["-m", "mieruka", "train", str(synth_dir), "--out", str(run), "--epochs", "1", "--image-size", "64"]
    light = ["--explain-method", "gradcam", "--tta", "none"]  # what DDP changes is the training, not what follows it
    done = _run([*TORCHRUN, *args, "--batch-size", "8", *light, "--quiet"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in run.glob("*.safetensors")) == [
        "best.safetensors",
        "model.safetensors",
        "resume.safetensors",
    ]
    assert done.stdout.count("epoch   1") == 1 and done.stdout.count("best epoch 1:") == 1  # one rank logs
    info = subprocess.run(
        [sys.executable, "-m", "mieruka", "info", str(run / "model.safetensors")], capture_output=True, text=True
    )
    assert info.returncode == 0 and "classes" in info.stdout
    assert read_info(run / "model.safetensors").image_size == 64
    # --resume under torchrun continues the same run
    more = _run([*TORCHRUN, *args[:-4], "--epochs", "2", "--image-size", "64", "--batch-size", "8", "--resume"])
    assert more.returncode == 0, more.stderr[-3000:]
    history = json.loads((run / "history.json").read_text(encoding="utf-8"))
    assert [row["epoch"] for row in history] == [1, 2]


def test_a_failing_rank_ends_the_job_with_its_message(synth_dir: Path, tmp_path: Path) -> None:
    script = tmp_path / "fail_rank_1.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, sys
            import mieruka.train.loop as loop
            from mieruka.cli import main

            original = loop.augment_with_masks

            def augment(*args, **kwargs):
                if os.environ["RANK"] == "1":
                    raise RuntimeError("rank 1 lost its disk")
                return original(*args, **kwargs)

            loop.augment_with_masks = augment
            sys.exit(main(sys.argv[1:]))
            """
        ),
        encoding="utf-8",
    )
    args = ["train", str(synth_dir), "--out", str(tmp_path / "run"), "--epochs", "1", "--image-size", "64"]
    failed = _run([*TORCHRUN, str(script), *args, "--pretrained", "none", "--quiet"], timeout=300)
    assert failed.returncode != 0
    assert "mieruka train (rank 1 of 2): internal error: RuntimeError: rank 1 lost its disk" in failed.stderr
