"""Errors that carry a message meant for the person at the keyboard."""

from __future__ import annotations

__all__ = ["CheckpointError", "DataError", "MierukaError"]


class MierukaError(ValueError):
    """A problem with the user's input, explained in one paragraph that names the file or option at fault."""


class DataError(MierukaError):
    """A data set, image or mask that cannot be used as given."""


class CheckpointError(MierukaError):
    """A model file that is missing, truncated, tampered with or not a mieruka checkpoint."""
