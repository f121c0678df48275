"""Options and printing shared by several commands."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mieruka.data.splits import SPLIT_CHOICES
from mieruka.errors import MierukaError
from mieruka.tta import TTA_CHOICES

if TYPE_CHECKING:
    from mieruka.batch.engine import EngineOptions

__all__ = [
    "add_common",
    "add_engine",
    "add_listen",
    "add_model",
    "add_out_file",
    "add_split",
    "add_tta",
    "check_new_file",
    "check_port_free",
    "engine_options",
    "fmt_rate",
    "int_at_least",
    "number_in",
    "port",
    "preflight",
]


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum`` (a bad value is a usage error naming the option)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is less than {minimum}")
        return value

    parse.__name__ = f"whole number >= {minimum}"
    return parse


def number_in(low: float, high: float, *, low_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [low, high] (or (low, high] with ``low_open``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        above = value > low if low_open else value >= low
        if not (math.isfinite(value) and above and value <= high):
            bracket = "(" if low_open else "["
            raise argparse.ArgumentTypeError(f"{text} is not in {bracket}{low:g}, {high:g}]")
        return value

    parse.__name__ = "number"
    return parse


def method_spec(text: str) -> str:
    """An argparse type: an explanation method spec ``NAME[:LAYER+LAYER…][/FUSION]``."""
    from mieruka.explain.spec import parse_method_spec

    try:
        parse_method_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--method {text!r}: ")) from None
    return text


method_spec.__name__ = "method spec"


def port(text: str) -> int:
    """An argparse type: a TCP port, 1–65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (1–65535)")
    return value


def add_tta(p: argparse.ArgumentParser) -> None:
    """``--tta`` for commands that classify with a trained model (default: the model's own choice)."""
    p.add_argument(
        "--tta",
        choices=TTA_CHOICES,
        help="test-time augmentation: average over flips (flip: 2 views) or flips and 90° turns (d4: 8 "
        "views); default: the model's, chosen on the validation split at training time",
    )


def preflight(args: argparse.Namespace) -> None:
    """Every precondition of the shared options, checked before a command does any work: the tracker can record,
    the Ray cluster answers, the port is free (so nothing is announced, trained or written first)."""
    tracker = getattr(args, "tracker", "none")
    if tracker != "none":
        from mieruka.tracking import check_tracker

        check_tracker(tracker)
    if getattr(args, "engine", "local") == "ray" and getattr(args, "ray_address", None):
        engine_options(args).check_reachable()
    if hasattr(args, "port") and hasattr(args, "host"):
        check_port_free(args.host, args.port)
    if getattr(args, "out_file", False):
        check_new_file(args.out, overwrite=args.overwrite, resume=getattr(args, "resume", False))


def add_out_file(p: argparse.ArgumentParser, help: str, *, required: bool) -> None:
    """``--out FILE`` and ``--overwrite``: a file that exists is refused unless ``--overwrite`` (or ``--resume``,
    where the command has it) says what to do with it."""
    p.add_argument("--out", type=Path, required=required, help=help)
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists (refused otherwise)")
    p.set_defaults(out_file=True)


def check_new_file(out: Path | None, *, overwrite: bool, resume: bool = False) -> None:
    """Refuse to replace an existing ``out`` (and an OpenVINO ``.xml``'s ``.bin``) unasked."""
    if out is None or overwrite or resume:
        return
    present = [p for p in (out, *([out.with_suffix(".bin")] if out.suffix.lower() == ".xml" else [])) if p.exists()]
    if present:
        raise MierukaError(
            f"--out {out}: {present[0]} exists; pass --overwrite to replace it"
            + (" (or --resume to continue it)" if out.suffix.lower() in (".csv", ".parquet") else "")
            + ", or choose another --out"
        )


def check_port_free(host: str, number: int) -> None:
    """Raise naming ``--port`` when ``host:number`` cannot be listened on (taken, or not this machine's)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server itself binds
        try:
            s.bind((host, number))
        except OSError as exc:
            raise MierukaError(
                f"--port {number}: cannot listen on {host}:{number} ({exc.strerror or exc}); another program holds "
                "it — choose another --port or stop that program"
            ) from None


def add_split(p: argparse.ArgumentParser, default: str, what: str = "split of the data set") -> None:
    p.add_argument("--split", default=default, choices=SPLIT_CHOICES, help=f"{what} (default {default})")


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_tracker(p: argparse.ArgumentParser, *, run_id: bool) -> None:
    """``--tracker`` (and ``--run-id`` for the commands that log to a training's run)."""
    from mieruka.tracking import TRACKERS

    choices = TRACKERS if not run_id else tuple(t for t in TRACKERS if t != "tensorboard")
    p.add_argument(
        "--tracker",
        choices=choices,
        default="none",
        help="record the figures: mlflow (mieruka[mlflow]; MLFLOW_TRACKING_URI, else ./mlruns)"
        + (", tensorboard (RUN/tb/)" if not run_id else "; logged to the training's run")
        + " (default none)",
    )
    if run_id:
        p.add_argument("--run-id", help="the MLflow run to log to (default: the one stored in the model)")


def add_layout(p: argparse.ArgumentParser) -> None:
    """``--layout``: how DATA is laid out, when detection cannot tell (default auto)."""
    from mieruka.data.sources import LAYOUTS

    p.add_argument(
        "--layout",
        choices=LAYOUTS,
        default=None,
        help="how DATA is laid out: auto (default: detected and said), manifest (CSV), mvtec (MVTec AD category), "
        "split-first (ROOT/{train,val,test}/<class>), folder (ROOT/<class>)",
    )


def add_listen(p: argparse.ArgumentParser, default_port: int) -> None:
    """``--host`` and ``--port`` of a command that serves HTTP (loopback only unless told otherwise)."""
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=port, default=default_port, help=f"port (default {default_port})")


def add_provider(p: argparse.ArgumentParser) -> None:
    """``--provider``: which ONNX Runtime execution provider runs an .onnx model."""
    from mieruka.deploy.providers import CHOICES

    p.add_argument(
        "--provider",
        choices=CHOICES,
        default="auto",
        help="ONNX Runtime's execution provider for a .onnx model (default auto: the best one installed; tensorrt "
        "and cuda need onnxruntime-gpu, openvino onnxruntime-openvino). The one used is printed",
    )


def add_engine(p: argparse.ArgumentParser) -> None:
    """``--engine`` and the Ray options of the batch commands (predict, explain, audit)."""
    g = p.add_argument_group("engine", "where the model runs: this process (local) or a Ray cluster (mieruka[ray])")
    g.add_argument("--engine", default="local", choices=("local", "ray"), help="default local")
    g.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="join this Ray cluster (auto, or ray://HOST:PORT); default: start a local Ray instance for the job",
    )
    g.add_argument("--workers", type=int_at_least(1), help="model replicas (default: from the cluster's resources)")
    g.add_argument(
        "--num-gpus-per-worker", type=number_in(0, 64), default=0.0, help="GPUs each replica holds (default 0: CPU)"
    )
    g.add_argument(
        "--cpus-per-worker",
        type=number_in(0, 1024, low_open=True),
        help="CPUs (threads) each replica holds (default: a local instance's cores shared by up to 4 replicas; up to 4 "
        "on a cluster)",
    )


def engine_options(args: argparse.Namespace) -> EngineOptions:
    """The :class:`EngineOptions` of parsed :func:`add_engine` options."""
    from mieruka.batch.engine import EngineOptions

    return EngineOptions(
        args.engine,
        address=args.ray_address,
        workers=args.workers,
        gpus_per_worker=args.num_gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker,
    )


def add_model(p: argparse.ArgumentParser, help: str = "model .safetensors") -> None:
    p.add_argument("model", type=Path, help=help)


def fmt_rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def track_figures(args: argparse.Namespace, summary: dict, figures: dict, files: list[Path], prefix: str) -> None:
    """``evaluate`` and ``audit`` (``--tracker``): log ``figures`` and ``files`` to the training's MLflow run
    (``--run-id``, else the id stored in the model)."""
    if args.tracker == "none":
        return
    from mieruka.tracking import log_evaluation, stored_run_id

    run_id = log_evaluation(args.tracker, args.run_id or stored_run_id(summary), figures, files, prefix)
    print(f"tracked: MLflow run {run_id}")
