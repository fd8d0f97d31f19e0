"""The audit trail in a Postgres table, for workers on several machines (POTABLE_AUDIT_DATABASE_URL).

The same chain as the file trail (governance/audit.py): each row keeps the entry's canonical JSON byte
for byte (text, not jsonb, which would reorder keys and reformat numbers under the hash), and `seq` orders
the chain. An append runs in one transaction that locks the table against other appenders (readers are
not blocked), checks the chain, and inserts the next entry: writers on any number of machines extend one
unbroken chain. An edited, deleted, inserted or reordered row breaks it at the row `verify` names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from governance.audit import AuditTrail

TABLE = "potable_audit"
# One table per database: the lock key makes concurrent first appends create it once.
CREATE_LOCK_KEY = 0x706F7461  # "pota"


def libpq_url(url: str) -> str:
    """psycopg2 takes libpq URLs; accept SQLAlchemy's `postgresql+psycopg2://` spelling as well."""
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", url)


class PostgresAuditTrail(AuditTrail):
    """The audit trail in table `potable_audit` of the database at `url` (created on first use)."""

    unit = "row"

    def __init__(self, url: str, connect_timeout: int = 10) -> None:
        self.url, self.connect_timeout = libpq_url(url), connect_timeout

    @property
    def where(self) -> str:
        """The database without credentials: this is printed."""
        return re.sub(r"//[^@/]*@", "//", self.url) + f" (table {TABLE})"

    @contextmanager
    def _connection(self):
        import psycopg2

        conn = psycopg2.connect(self.url, connect_timeout=self.connect_timeout, application_name="potable-audit")
        try:
            with conn:  # commits on success, rolls back on any error
                with conn.cursor() as cur:
                    yield cur
        finally:
            conn.close()

    def exists(self) -> bool:
        with self._connection() as cur:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (TABLE,))
            return bool(cur.fetchone()[0])

    def _read_lines(self) -> list[str]:
        with self._connection() as cur:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (TABLE,))
            if not cur.fetchone()[0]:
                return []
            cur.execute(f"SELECT entry FROM {TABLE} ORDER BY seq")  # nosec B608 # constant table name
            return [row[0] for row in cur.fetchall()]

    @contextmanager
    def _appending(self) -> Iterator[tuple[list[str], Callable[[int, bytes], None]]]:
        with self._connection() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (CREATE_LOCK_KEY,))
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} ("
                "seq bigint PRIMARY KEY, entry text NOT NULL, written_at timestamptz NOT NULL DEFAULT now())"
            )
            # Conflicts with itself (one appender at a time), not with the readers' ACCESS SHARE.
            cur.execute(f"LOCK TABLE {TABLE} IN SHARE ROW EXCLUSIVE MODE")
            cur.execute(f"SELECT entry FROM {TABLE} ORDER BY seq")  # nosec B608 # constant table name
            lines = [row[0] for row in cur.fetchall()]

            def write(seq: int, line: bytes) -> None:
                cur.execute(f"INSERT INTO {TABLE} (seq, entry) VALUES (%s, %s)", (seq, line.decode()))  # nosec B608

            yield lines, write
