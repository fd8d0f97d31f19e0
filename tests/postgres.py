"""Throw-away databases on the machine's Postgres, for fixtures of any scope."""

from __future__ import annotations

import contextlib

import pytest


@contextlib.contextmanager
def postgres_databases():
    """Fresh databases on the machine's Postgres (127.0.0.1:5432, trust auth): a factory; all dropped afterwards.

    Optuna and MLflow each need their own database (both keep an `alembic_version` table)."""
    import uuid

    psycopg2 = pytest.importorskip("psycopg2")
    try:
        conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=3)
    except psycopg2.OperationalError:
        pytest.skip("no Postgres on 127.0.0.1:5432")
    conn.autocommit = True
    created: list[str] = []

    def create() -> str:
        created.append(f"potable_test_{uuid.uuid4().hex[:8]}")
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{created[-1]}"')
        return f"postgresql+psycopg2://postgres@127.0.0.1:5432/{created[-1]}"

    try:
        yield create
    finally:
        with conn.cursor() as cur:
            for name in created:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()
