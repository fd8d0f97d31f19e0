"""Postgres connections for the stores that workers on several machines share (audit trail, prediction log)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager


def libpq_url(url: str) -> str:
    """psycopg2 takes libpq URLs; accept SQLAlchemy's `postgresql+psycopg2://` spelling as well."""
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", url)


def printable(url: str) -> str:
    """The URL without credentials, for messages."""
    return re.sub(r"//[^@/]*@", "//", libpq_url(url))


@contextmanager
def transaction(url: str, application: str, connect_timeout: int = 10) -> Iterator:
    """A cursor in one transaction: committed when the block ends, rolled back on any error; then closed."""
    import psycopg2

    conn = psycopg2.connect(libpq_url(url), connect_timeout=connect_timeout, application_name=application)
    try:
        with conn, conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def table_exists(cur, table: str) -> bool:
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
    return bool(cur.fetchone()[0])
