"""The audit trail in Postgres: the same chain as the file, tampering named at its row, writers in parallel."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.postgres import transaction
from governance.audit import GENESIS, BrokenChain, entry_hash
from governance.audit_postgres import TABLE, PostgresAuditTrail


@pytest.fixture
def trail_url(postgres_db) -> str:
    return postgres_db()


def _filled(url: str, n: int = 5) -> PostgresAuditTrail:
    trail = PostgresAuditTrail(url)
    for i in range(n):
        trail.append("tester", f"action-{i}", {"model_version": str(i)}, {"i": i})
    return trail


def _sql(url: str, *statements: tuple[str, tuple]) -> None:
    """What a person with write access to the database could do behind the platform's back."""
    with transaction(url, "tampering") as cur:
        for statement, params in statements:
            cur.execute(statement, params)


def _entry(url: str, seq: int) -> dict:
    return next(e for e in PostgresAuditTrail(url).entries() if e["seq"] == seq)


def test_entries_are_chained_and_kept_byte_for_byte(trail_url) -> None:
    trail = _filled(trail_url)
    entries = trail.entries()
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5] and entries[0]["prev_hash"] == GENESIS
    assert all(b["prev_hash"] == a["hash"] for a, b in zip(entries, entries[1:], strict=False))
    assert all(entry_hash(e) == e["hash"] for e in entries)
    assert trail.verify().ok and trail.verify().entries == 5 and trail.exists()
    assert [e["action"] for e in trail.lineage("3")] == ["action-3"]
    assert "@" not in trail.where and TABLE in trail.where


def _edit(url):
    entry = _entry(url, 3) | {"actor": "mallory"}
    return [(f"UPDATE {TABLE} SET entry = %s WHERE seq = 3", (json.dumps(entry),))], 3


def _edit_and_rehash(url):
    entry = _entry(url, 3) | {"details": {"i": 99}}
    entry["hash"] = entry_hash(entry)
    return [(f"UPDATE {TABLE} SET entry = %s WHERE seq = 3", (json.dumps(entry),))], 4


def _delete(url):
    return [(f"DELETE FROM {TABLE} WHERE seq = 2", ())], 2


def _insert(url):
    forged = _entry(url, 2) | {"action": "forged"}
    forged["hash"] = entry_hash(forged)
    shift = [(f"UPDATE {TABLE} SET seq = seq + 1000 WHERE seq >= 3", ())]
    back = [(f"UPDATE {TABLE} SET seq = seq - 999 WHERE seq >= 1000", ())]
    return [*shift, *back, (f"INSERT INTO {TABLE} (seq, entry) VALUES (3, %s)", (json.dumps(forged),))], 3


def _reorder(url):
    swap = [(2, 0), (4, 2), (0, 4)]
    return [(f"UPDATE {TABLE} SET seq = %s WHERE seq = %s", (new, old)) for old, new in swap], 2


@pytest.mark.parametrize("tamper", [_edit, _edit_and_rehash, _delete, _insert, _reorder])
def test_tampering_is_named_at_the_first_bad_row_and_stops_appends(trail_url, tamper) -> None:
    trail = _filled(trail_url)
    statements, expected = tamper(trail_url)
    _sql(trail_url, *statements)
    verdict = trail.verify()
    assert not verdict.ok and verdict.bad_line == expected, verdict
    rows = len(trail.entries())
    with pytest.raises(BrokenChain, match=f"broken at row {expected}"):
        trail.append("tester", "after-tampering", {})
    assert len(trail.entries()) == rows  # nothing was added behind the break


def _append_many(url: str, worker: int) -> None:
    trail = PostgresAuditTrail(url)
    for i in range(20):
        trail.append(f"worker-{worker}", "append", {"model_version": str(i)})


def test_concurrent_writers_in_several_processes_keep_one_chain(trail_url) -> None:
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_append_many, args=(trail_url, w)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=120)
        assert p.exitcode == 0
    trail = PostgresAuditTrail(trail_url)
    verdict = trail.verify()
    assert verdict.ok and verdict.entries == 80
    per_writer = {w: sum(e["actor"] == f"worker-{w}" for e in trail.entries()) for w in range(4)}
    assert per_writer == dict.fromkeys(range(4), 20)


def _verify_cli(url: str) -> subprocess.CompletedProcess:
    potable = str(Path(sys.executable).with_name("potable"))
    env = {**os.environ, "POTABLE_AUDIT_DATABASE_URL": url}
    return subprocess.run([potable, "audit", "verify"], capture_output=True, text=True, env=env, timeout=120)


def test_cli_verify_reads_the_configured_table(trail_url) -> None:
    empty = _verify_cli(trail_url)
    assert empty.returncode == 1 and "no audit trail" in empty.stderr
    _filled(trail_url)
    ok = _verify_cli(trail_url)
    assert ok.returncode == 0 and "intact: 5 entries" in ok.stdout, ok.stderr
    statements, _ = _delete(trail_url)
    _sql(trail_url, *statements)
    bad = _verify_cli(trail_url)
    assert bad.returncode == 1 and "row 2" in bad.stderr


def test_an_unreachable_database_is_a_clear_error(tmp_path) -> None:
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    answer = _verify_cli(f"postgresql://postgres@127.0.0.1:{port}/nowhere")
    assert answer.returncode != 0 and "Traceback" not in answer.stderr
    assert str(port) in answer.stderr or "connect" in answer.stderr.lower(), answer.stderr
