"""What a data source is: a layout that recognises a path and lists its samples."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from mieruka.data.sample import Sample

__all__ = ["DataSource", "SourceContents"]


@dataclass(frozen=True)
class SourceContents:
    """The samples a source found (splits set where the layout gives them), files it skipped, and what the user
    should hear about (e.g. an empty class folder, a duplicate manifest row)."""

    samples: list[Sample]
    ignored: list[Path]
    warnings: list[str] = field(default_factory=list)


class DataSource(Protocol):
    """One on-disk layout of a labelled image collection."""

    name: str
    description: str
    split_rule: str
    """How the layout assigns splits when it does so by a rule of its own ("" otherwise), for the layout line."""

    def detect(self, path: Path) -> bool:
        """Whether ``path`` (which exists) is laid out this way."""
        ...

    def read(self, path: Path) -> SourceContents:
        """Every sample under ``path``; raises :class:`~mieruka.errors.DataError` naming the file at fault."""
        ...
