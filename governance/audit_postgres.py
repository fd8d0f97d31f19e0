"""The audit trail in a Postgres table, for workers on several machines (POTABLE_AUDIT_DATABASE_URL).

The same chain as the file trail (governance/audit.py): each row keeps the entry's canonical JSON byte
for byte (text, not jsonb, which would reorder keys and reformat numbers under the hash), and `seq` orders
the chain. An append runs in one transaction that locks the table against other appenders (readers are
not blocked), checks the chain, and inserts the next entry: writers on any number of machines extend one
unbroken chain. An edited, deleted, inserted or reordered row breaks it at the row `verify` names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from core.postgres import libpq_url, printable, table_exists, transaction
from governance.audit import AuditTrail

TABLE = "potable_audit"
# One table per database: the lock key makes concurrent first appends create it once.
CREATE_LOCK_KEY = 0x706F7461  # "pota"


class PostgresAuditTrail(AuditTrail):
    """The audit trail in table `potable_audit` of the database at `url` (created on first use)."""

    unit = "row"

    def __init__(self, url: str, connect_timeout: int = 10, writer: str | None = None) -> None:
        super().__init__(writer)
        self.url, self.connect_timeout = libpq_url(url), connect_timeout

    @property
    def where(self) -> str:
        """The database without credentials: this is printed."""
        return f"{printable(self.url)} (table {TABLE})"

    def _connection(self):
        return transaction(self.url, "potable-audit", self.connect_timeout)

    def exists(self) -> bool:
        with self._connection() as cur:
            return table_exists(cur, TABLE)

    def _read_lines(self) -> list[str]:
        with self._connection() as cur:
            if not table_exists(cur, TABLE):
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
