"""Hash-chained, append-only audit trail: a JSONL file (the default) or a Postgres table (several machines).

Each entry carries the SHA-256 of the previous entry (`prev_hash`) and its own `hash` over the
canonical JSON of everything else, so editing, deleting, inserting or reordering any entry breaks the
chain at the entry `verify` names. Appends are serialised (a file lock, or a table lock in the appending
transaction): concurrent writers (flows, CLI, workers on other machines) never interleave or fork the
chain, and an append refuses to extend a chain that no longer verifies. Both stores keep the entry's
canonical JSON byte for byte, so the same check covers both.
"""

from __future__ import annotations

import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock

from core.settings import worker_name

GENESIS = "0" * 64
SUBJECT_KEYS = (
    "data_sha256",
    "dataset_version",
    "run_id",
    "model_version",
    "bento_tag",
    "image_digest",
    "slot",
    "study",
)
# Entries that made a training table version (its batches), as opposed to runs that trained on one.
TABLE_ACTIONS = ("table_seeded", "batch_appended")


def canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON of the entry without its own hash (prev_hash included)."""
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


class BrokenChain(RuntimeError):
    """The trail no longer verifies: appending would hide the break behind a valid-looking new entry."""


@dataclass(frozen=True)
class Verdict:
    ok: bool
    entries: int
    bad_line: int | None = None
    reason: str = ""


class AuditTrail(ABC):
    """The chain: building, checking and reading entries. Subclasses say where the entries are kept."""

    unit = "line"  # what `Verdict.bad_line` counts, for messages

    def __init__(self, writer: str | None = None) -> None:
        self.writer = writer or worker_name()  # which machine/worker: several may share one trail

    @property
    @abstractmethod
    def where(self) -> str: ...

    @abstractmethod
    def exists(self) -> bool: ...

    @abstractmethod
    def _read_lines(self) -> list[str]:
        """Every entry's canonical JSON, in chain order."""

    @abstractmethod
    def _appending(self) -> AbstractContextManager[tuple[list[str], Callable[[int, bytes], None]]]:
        """Exclusive: the entries as they are now, and a writer for one more (seq, canonical JSON)."""

    def append(self, actor: str, action: str, subject: dict[str, Any], details: dict[str, Any] | None = None) -> dict:
        unknown = set(subject) - set(SUBJECT_KEYS)
        if unknown:
            raise ValueError(f"unknown audit subject keys {sorted(unknown)}; allowed: {SUBJECT_KEYS}")
        with self._appending() as (lines, write):
            verdict = self._verify(lines)  # a few ms for thousands of entries: cheap next to a silent fork
            if not verdict.ok:
                raise BrokenChain(
                    f"audit trail {self.where} is broken at {self.unit} {verdict.bad_line} ({verdict.reason}); "
                    f"not appending {action!r} to it: restore the trail (potable audit verify) first"
                )
            entry = {
                "seq": len(lines) + 1,
                "timestamp": datetime.now(UTC).isoformat(timespec="microseconds"),
                "actor": actor,
                "writer": self.writer,
                "action": action,
                "subject": {k: str(v) for k, v in subject.items() if v is not None},
                "details": details or {},
                "prev_hash": json.loads(lines[-1])["hash"] if lines else GENESIS,
            }
            entry["hash"] = entry_hash(entry)
            write(entry["seq"], canonical(entry))
        return entry

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self._read_lines()]

    def verify(self) -> Verdict:
        """Walk the chain; the first entry that does not fit is named (1-based position)."""
        return self._verify(self._read_lines())

    @staticmethod
    def _verify(lines: list[str]) -> Verdict:
        prev = GENESIS
        for number, line in enumerate(lines, start=1):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                return Verdict(False, len(lines), number, "not valid JSON")
            if not isinstance(entry, dict) or "hash" not in entry or "prev_hash" not in entry:
                return Verdict(False, len(lines), number, "not an audit entry (hash or prev_hash missing)")
            if entry_hash(entry) != entry["hash"]:
                return Verdict(False, len(lines), number, "content does not match its hash (entry edited)")
            if entry["prev_hash"] != prev:
                return Verdict(
                    False,
                    len(lines),
                    number,
                    "prev_hash does not match the entry before it (an entry was deleted, inserted or reordered)",
                )
            if entry.get("seq") != number:
                return Verdict(False, len(lines), number, f"sequence number {entry.get('seq')} where {number} belongs")
            prev = entry["hash"]
        return Verdict(True, len(lines))

    def lineage(self, model_version: str, batches: list[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
        """Entries of one model version: its run and study, and the commits of the batches in the table
        version it was trained on (`batches`: (sha256, table version) pairs from the table's log). Another
        model version, or the same bytes sent again into another table version, is never mixed in."""
        entries = self.entries()
        mine = [e for e in entries if e["subject"].get("model_version") == str(model_version)]
        keys = {(k, e["subject"][k]) for e in mine for k in ("run_id", "study") if k in e["subject"]}
        if batches is None:  # from the trail alone: the commits up to the table version the run trained on
            trained_on = [int(e["subject"]["dataset_version"]) for e in mine if "dataset_version" in e["subject"]]
            batches = [
                (e["subject"].get("data_sha256"), e["subject"]["dataset_version"])
                for e in entries
                if e["action"] in TABLE_ACTIONS
                and e["details"].get("committed", True)
                and trained_on
                and int(e["subject"]["dataset_version"]) <= trained_on[0]
            ]
        wanted = set(batches)

        def related(e: dict[str, Any]) -> bool:
            subject = e["subject"]
            if e in mine or any((k, v) in keys for k, v in subject.items() if k != "model_version"):
                return "model_version" not in subject or subject["model_version"] == str(model_version)
            if e["action"] in TABLE_ACTIONS:
                return (subject.get("data_sha256"), subject.get("dataset_version")) in wanted
            return False

        chosen = [e for e in entries if related(e)]
        # Each commit's own validation: the last `batch_validated` of those bytes before the commit.
        for commit in [e for e in chosen if e["action"] in TABLE_ACTIONS]:
            earlier = [
                e
                for e in entries
                if e["action"] == "batch_validated"
                and e["subject"].get("data_sha256") == commit["subject"].get("data_sha256")
                and e["seq"] < commit["seq"]
            ]
            if earlier:
                chosen.append(earlier[-1])
        return sorted({e["seq"]: e for e in chosen}.values(), key=lambda e: e["seq"])


class AuditLog(AuditTrail):
    """The audit trail in a JSONL file at `path` (default POTABLE_HOME/audit/audit.jsonl): one machine."""

    def __init__(self, path: Path, writer: str | None = None):
        super().__init__(writer)
        self.path = Path(path)
        self._lock = FileLock(str(self.path) + ".lock", timeout=60)

    @property
    def where(self) -> str:
        return str(self.path)

    def exists(self) -> bool:
        return self.path.exists()

    def _read_lines(self) -> list[str]:
        if not self.path.exists():
            return []
        return [line for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]

    @contextmanager
    def _appending(self) -> Iterator[tuple[list[str], Callable[[int, bytes], None]]]:
        def write(_seq: int, line: bytes) -> None:
            with open(self.path, "ab") as fh:
                fh.write(line + b"\n")
                fh.flush()
                os.fsync(fh.fileno())

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            yield self._read_lines(), write


def audit_log(settings) -> AuditTrail:
    """The platform's trail: the Postgres table when POTABLE_AUDIT_DATABASE_URL is set (shared by every
    worker), else the file under POTABLE_HOME."""
    if settings.audit_database_url is not None:
        from governance.audit_postgres import PostgresAuditTrail

        return PostgresAuditTrail(settings.audit_database_url.get_secret_value(), writer=settings.worker_name)
    return AuditLog(settings.home_dir / "audit" / "audit.jsonl", writer=settings.worker_name)
