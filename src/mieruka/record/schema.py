"""The record's tables (SQLAlchemy Core: the same schema in SQLite and PostgreSQL) and their migrations.

Migrations are a documented equivalent of Alembic's, kept small: ``mieruka_meta`` holds ``schema_version``; a store
of an older version is brought forward by the steps of :data:`UPGRADES`, in order, each in its own transaction; a
store of a newer version is refused (this mieruka would not know its columns). Version 1 is the first.

``decisions``: one row per answered image. ``models``: each model that answered, by id (the SHA-256 of its file),
with its classes and, when its training stored them, the reference distributions ``monitor`` compares with.
``flags`` (version 2): what was learnt of a decision later — a part the line passed that failed downstream (an
``escape``) or one it rejected that was good (an ``overkill``) — with when, and a note (:mod:`mieruka.record.flags`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    select,
)

from mieruka.errors import MierukaError

__all__ = [
    "SCHEMA_VERSION",
    "UPGRADES",
    "decisions",
    "flags",
    "metadata",
    "migrate",
    "models",
    "open_engine",
]

SCHEMA_VERSION = 2

metadata = MetaData()

decisions = Table(
    "decisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", Float, nullable=False, index=True),  # seconds since 1970-01-01 UTC
    Column("part_id", String(200), index=True),
    Column("model_id", String(64), nullable=False, index=True),
    Column("model_version", String(40)),
    Column("filename", String(400)),
    Column("class", String(200), nullable=False, index=True),
    Column("probability", Float, nullable=False),
    Column("probabilities", Text, nullable=False),  # JSON: class → probability
    Column("verdict", String(2), nullable=False, index=True),
    Column("ng_probability", Float, nullable=False),
    Column("threshold", Float, nullable=False),
    Column("tta", String(10)),
    Column("method", String(120)),
    Column("width", Integer),
    Column("height", Integer),
    Column("brightness", Float),
    Column("contrast", Float),
    Column("sharpness", Float),
    Column("peak_x", Float),
    Column("peak_y", Float),
    Column("spread", Float),
    Column("fragments", Integer),
    Column("image_file", String(200)),  # relative to the store's files folder; None: not kept
    Column("overlay_file", String(200)),
)

models = Table(
    "models",
    metadata,
    Column("model_id", String(64), primary_key=True),
    Column("version", String(40)),
    Column("path", Text),
    Column("classes", Text, nullable=False),  # JSON list
    Column("verdicts", Text, nullable=False),  # JSON: class → OK/NG
    Column("reference", Text),  # JSON: the training's reference distributions, or None
    Column("first_seen", Float, nullable=False),
)

flags = Table(
    "flags",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("decision_id", Integer, nullable=False, index=True),
    Column("kind", String(20), nullable=False),  # mieruka.record.FLAG_KINDS
    Column("note", Text),
    Column("time", Float, nullable=False),  # when it was flagged
)

meta = Table("mieruka_meta", metadata, Column("key", String(50), primary_key=True), Column("value", Text))

UPGRADES: dict[int, Callable[[Connection], None]] = {
    1: lambda conn: flags.create(conn, checkfirst=True),  # 1 → 2: decisions flagged later
}
"""``version → step`` bringing a store of that version to the next one."""


def open_engine(url: str) -> Engine:
    """An engine for ``url`` (``sqlite:///PATH`` or ``postgresql://…``). SQLite runs in WAL mode (readers work
    while the service writes) with a 30 s busy timeout; a committed row survives a killed process."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    try:
        engine = create_engine(url, pool_pre_ping=True)
    except Exception as exc:  # an unknown dialect, a missing driver
        raise MierukaError(f"--record {url}: {exc} (give sqlite:///PATH or postgresql://…)") from None
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_settings(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")  # in WAL: durable across a killed process
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

    return engine


def migrate(engine: Engine) -> int:
    """Create the tables of a new store, bring an older one forward; returns the schema version. The first touch
    of the database: one that cannot be reached is refused naming it."""
    from sqlalchemy.exc import OperationalError

    try:
        metadata.create_all(engine)
    except OperationalError as exc:
        reason = str(exc.orig if exc.orig is not None else exc).strip().splitlines()[0]
        url = engine.url.render_as_string(hide_password=True).replace("postgresql+psycopg://", "postgresql://")
        raise MierukaError(f"{url}: cannot open the record ({reason})") from None
    with engine.begin() as conn:
        row = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).first()
        if row is None:
            conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
            return SCHEMA_VERSION
    version = int(row[0])
    if version > SCHEMA_VERSION:
        raise MierukaError(
            f"{engine.url.render_as_string(hide_password=True)}: a record of schema version {version}; this mieruka "
            f"knows up to {SCHEMA_VERSION}: upgrade mieruka"
        )
    while version < SCHEMA_VERSION:
        with engine.begin() as conn:
            UPGRADES[version](conn)
            version += 1
            conn.execute(meta.update().where(meta.c.key == "schema_version").values(value=str(version)))
    return version
