"""The service's prediction log: what the drift monitor reads.

Each server worker appends JSON lines to its own hourly file under POTABLE_HOME/predictions (one writer per
file, no locking). With POTABLE_PREDICTION_LOG_DATABASE_URL set, the same rows are also shipped to a
Postgres table every POTABLE_PREDICTION_LOG_SHIP_SECONDS by a thread of the worker, so a drift run on any
machine sees every slot's traffic (workers on several machines share no disk). Shipping never touches a
request: requests add rows to a bounded buffer; while the database is unreachable rows wait there.

Part of the Bento (service.py imports it); it knows nothing of the platform.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import json
import logging
import os
import random
import re
import socket
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

TABLE = "potable_predictions"
CREATE_LOCK_KEY = 0x70726564  # "pred": concurrent first ships create the table once
logger = logging.getLogger("potable.prediction_log")


def env_number(name: str, default: float) -> float:
    return float(os.environ.get(name, str(default)))


class PredictionLog:
    """What the drift monitor reads: JSON lines in one file per server worker per hour, under
    POTABLE_HOME/predictions, kept for a time window (POTABLE_PREDICTION_LOG_HOURS) however busy the service.

    No single client can rewrite it: each client (address, or the router's X-Forwarded-For) has a budget of
    logged rows per minute, and a larger share of its traffic is sampled at random into that budget; an
    hour's file stops growing at a byte cap. The predictions themselves are all answered and counted.
    One writer per file (a worker owns its files), so no locking is needed.
    """

    def __init__(self, folder: Path, worker: int, shipper: PredictionShipper | None = None) -> None:
        self.folder, self.worker, self.shipper = folder, worker, shipper
        self.keep_hours = env_number("POTABLE_PREDICTION_LOG_HOURS", 48)
        self.hour_cap_bytes = int(env_number("POTABLE_PREDICTION_LOG_MAX_BYTES", 20 * 1024 * 1024))
        self.client_rows_per_minute = int(env_number("POTABLE_PREDICTION_LOG_CLIENT_ROWS_PER_MINUTE", 600))
        self.hour, self.file = "", None
        self.minute, self.logged_by_client = "", {}
        self.random = random.Random()  # nosec B311 # samples log lines; no secret depends on it
        self.lock = threading.Lock()  # large batches are answered in the thread pool, small ones on the loop
        folder.mkdir(parents=True, exist_ok=True)

    def record(self, client: str, records: list[dict[str, Any]]) -> int:
        """Append the client's share of `records`; returns how many lines were written."""
        now = datetime.now(UTC)
        stamp = now.isoformat()  # 2026-11-28T16:05:28.123456+00:00: the minute and hour are its prefixes
        minute = f"{stamp[0:4]}{stamp[5:7]}{stamp[8:10]}T{stamp[11:13]}{stamp[14:16]}"
        with self.lock:
            kept = self._within_budget(client, records, minute)
            handle = self._file_for(minute[:11])
            if not kept or handle.tell() >= self.hour_cap_bytes:
                return 0
            rows = [{"timestamp": stamp, "client": client} | r for r in kept]
            handle.write("".join(json.dumps(row) + "\n" for row in rows))
            handle.flush()
        if self.shipper is not None:
            self.shipper.add(rows)
        return len(rows)

    def _within_budget(self, client: str, records: list[dict[str, Any]], minute: str) -> list[dict[str, Any]]:
        if minute != self.minute:  # budgets are per minute: forget the last one (bounds the table too)
            self.minute, self.logged_by_client = minute, {}
        left = self.client_rows_per_minute - self.logged_by_client.get(client, 0)
        if left <= 0:
            return []
        if len(records) > left:  # a random sample, not the first rows: a batch may be sorted
            chosen = sorted(self.random.sample(range(len(records)), left))
            records = [records[i] for i in chosen]
        self.logged_by_client[client] = self.logged_by_client.get(client, 0) + len(records)
        return records

    def _file_for(self, hour: str):
        if hour != self.hour or self.file is None:
            if self.file is not None:
                self.file.close()
            self.hour = hour
            self.file = open(self.folder / f"predictions-{self.worker}-{hour}.jsonl", "a", encoding="utf-8")  # noqa: SIM115
            self._forget_old_hours()
        return self.file

    def _forget_old_hours(self) -> None:
        oldest = (datetime.now(UTC) - timedelta(hours=self.keep_hours)).strftime("%Y%m%dT%H")
        for path in self.folder.glob(f"predictions-{self.worker}-*.jsonl"):
            if path.stem.rsplit("-", 1)[-1] < oldest:
                path.unlink(missing_ok=True)


class PredictionShipper:
    """Ships logged rows to table `potable_predictions` (timestamp, worker, the row as jsonb) in batches.

    A daemon thread inserts what the buffer holds every `every` seconds, and once more at exit. On a failed
    insert (database down, connection cut) the rows go back to the buffer and the next tick retries with a
    new connection; beyond `cap` rows the oldest are dropped and counted (`dropped`), so a long outage
    costs memory bounded by the cap, never a request.
    """

    def __init__(self, url: str, worker: str, every: float, cap: int) -> None:
        self.url, self.worker, self.every = libpq_url(url), worker, every
        self.buffer: collections.deque[dict[str, Any]] = collections.deque(maxlen=cap)
        self.lock = threading.Lock()
        self.shipped = self.dropped = 0
        self.connection = None
        self.stopped = threading.Event()

    def start(self) -> PredictionShipper:
        threading.Thread(target=self._loop, name="prediction-shipper", daemon=True).start()
        atexit.register(self.stop)
        return self

    def add(self, records: list[dict[str, Any]]) -> None:
        with self.lock:
            overflow = len(self.buffer) + len(records) - self.buffer.maxlen
            self.dropped += max(0, overflow)
            self.buffer.extend(records)

    def stop(self) -> None:
        """Last ship at exit (a worker stopping gracefully loses nothing it had logged)."""
        self.stopped.set()
        self.ship()

    def _loop(self) -> None:
        while not self.stopped.wait(self.every):
            self.ship()

    def ship(self) -> int:
        with self.lock:
            rows, self.buffer = list(self.buffer), collections.deque(maxlen=self.buffer.maxlen)
        if not rows:
            return 0
        try:
            self._insert(rows)
        except Exception as exc:  # noqa: BLE001 # any failure: keep the rows, retry on the next tick
            logger.warning("prediction log: %d rows not shipped yet (%s); retrying", len(rows), exc)
            self._close()
            self.add_back(rows)
            return 0
        self.shipped += len(rows)
        return len(rows)

    def add_back(self, rows: list[dict[str, Any]]) -> None:
        """Failed rows before those logged meanwhile, the oldest dropped first if over the cap."""
        with self.lock:
            merged = [*rows, *self.buffer]
            self.dropped += max(0, len(merged) - self.buffer.maxlen)
            self.buffer = collections.deque(merged[-self.buffer.maxlen :], maxlen=self.buffer.maxlen)

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        import psycopg2
        from psycopg2.extras import Json, execute_values

        if self.connection is None:
            self.connection = psycopg2.connect(self.url, connect_timeout=5, application_name="potable-predictions")
            with self.connection, self.connection.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (CREATE_LOCK_KEY,))
                cur.execute(CREATE_TABLE)
        with self.connection, self.connection.cursor() as cur:  # one transaction: all rows or none
            values = [(row["timestamp"], self.worker, Json(row)) for row in rows]
            execute_values(cur, f"INSERT INTO {TABLE} (logged_at, worker, record) VALUES %s", values)  # nosec B608

    def _close(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(Exception):  # already broken: nothing left to release
                self.connection.close()
            self.connection = None


CREATE_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigserial PRIMARY KEY, logged_at timestamptz NOT NULL, "
    f"worker text NOT NULL, record jsonb NOT NULL); "
    f"CREATE INDEX IF NOT EXISTS {TABLE}_logged_at ON {TABLE} (logged_at)"
)


def libpq_url(url: str) -> str:
    """psycopg2 takes libpq URLs; accept SQLAlchemy's `postgresql+psycopg2://` spelling as well.
    Repeated from core.postgres on purpose: the Bento carries its own files only."""
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", url)


def shipper_from_env(worker_index: int) -> PredictionShipper | None:
    """The worker's shipper when POTABLE_PREDICTION_LOG_DATABASE_URL is set, started; else None."""
    url = os.environ.get("POTABLE_PREDICTION_LOG_DATABASE_URL")
    if not url:
        return None
    worker = f"{os.environ.get('POTABLE_WORKER_NAME') or socket.gethostname()}-{os.getpid()}-{worker_index}"
    every = env_number("POTABLE_PREDICTION_LOG_SHIP_SECONDS", 10)
    cap = int(env_number("POTABLE_PREDICTION_LOG_SHIP_BUFFER_ROWS", 100_000))
    return PredictionShipper(url, worker, every, cap).start()
