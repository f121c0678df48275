"""The options of ``mieruka audit`` in one object: :func:`mieruka.audit.run.run_audit` and
:func:`mieruka.audit.selection.select_method` take them as keywords."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from mieruka.audit.faithfulness import FaithfulnessConfig
from mieruka.audit.triage import AuditConfig
from mieruka.batch.work import EngineOptions

__all__ = ["AuditOptions"]


@dataclass(frozen=True)
class AuditOptions:
    """How an audit runs.

    Attributes:
        split: The split to audit.
        methods: Method specs (:func:`~mieruka.explain.spec.parse_method_spec`); ``auto`` chooses one on the
            validation split's regions (:mod:`mieruka.audit.selection`), written to the summary, never into the
            model; None: the model's stored method beside plain Grad-CAM.
        target: What the maps explain: ``pred`` (the decision, default), ``true``, ``ng`` or a class name.
        config: Triage thresholds.
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: Images per batch.
        lang: Language of the report (``en`` or ``ja``).
        report: Write ``report/index.html`` with panels.
        boxes: Box annotations to use as the regions instead of the data set's masks: a COCO JSON file (entries
            matched by image file name) or a folder of Pascal VOC ``<stem>.xml`` / YOLO ``<stem>.txt`` files.
            Images without an entry have no region.
        faithfulness: Also run the faithfulness checks (deletion/insertion, average drop/increase, model
            randomization; :mod:`mieruka.audit.faithfulness`) on this many images of the split, evenly spread
            (0: off; they cost about 2 × (steps + 1) forward passes per image and method).
        faithfulness_config: Steps, baseline fill and the randomization threshold.
        progress: Show progress bars.
        strict: Stop at the first unreadable image (default: its rows carry the error).
        engine: Where the model runs (:class:`~mieruka.batch.engine.EngineOptions`).
        layout: How the data set is laid out (``--layout``; default: as the model was trained).
    """

    split: str = "test"
    methods: Sequence[str] | None = None
    target: str = "pred"
    config: AuditConfig = field(default_factory=AuditConfig)
    device: str = "auto"
    batch_size: int = 16
    lang: str = "en"
    report: bool = True
    boxes: str | os.PathLike[str] | None = None
    faithfulness: int = 0
    faithfulness_config: FaithfulnessConfig = field(default_factory=FaithfulnessConfig)
    progress: bool = True
    strict: bool = False
    engine: EngineOptions = field(default_factory=EngineOptions)
    layout: str | None = None
