"""The audit trail: chained hashes, every kind of tampering named at its line, concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest

from governance.audit import GENESIS, AuditLog, entry_hash


def _filled(path: Path, n: int = 5) -> AuditLog:
    log = AuditLog(path)
    for i in range(n):
        log.append("tester", f"action-{i}", {"model_version": str(i)}, {"i": i})
    return log


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_entries_are_chained(tmp_path) -> None:
    log = _filled(tmp_path / "audit.jsonl")
    entries = log.entries()
    assert entries[0]["prev_hash"] == GENESIS
    assert all(b["prev_hash"] == a["hash"] for a, b in zip(entries, entries[1:], strict=False))
    assert all(entry_hash(e) == e["hash"] for e in entries)
    assert log.verify().ok and log.verify().entries == 5


def test_unknown_subject_keys_are_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown audit subject keys"):
        AuditLog(tmp_path / "a.jsonl").append("x", "y", {"colour": "red"})


def _tamper_edit(lines):
    entry = json.loads(lines[2])
    entry["actor"] = "mallory"
    lines[2] = json.dumps(entry)
    return lines, 3


def _tamper_edit_and_rehash(lines):
    entry = json.loads(lines[2])
    entry["details"] = {"i": 99}
    entry["hash"] = entry_hash(entry)
    lines[2] = json.dumps(entry)
    return lines, 4  # the edited line is self-consistent; the next one no longer points at it


def _tamper_delete(lines):
    del lines[1]
    return lines, 2


def _tamper_insert(lines):
    forged = json.loads(lines[1])
    forged["action"] = "forged"
    forged["hash"] = entry_hash(forged)
    lines.insert(2, json.dumps(forged))
    return lines, 3


def _tamper_reorder(lines):
    lines[1], lines[3] = lines[3], lines[1]
    return lines, 2


@pytest.mark.parametrize(
    "tamper", [_tamper_edit, _tamper_edit_and_rehash, _tamper_delete, _tamper_insert, _tamper_reorder]
)
def test_tampering_is_named_at_the_first_bad_line(tmp_path, tamper) -> None:
    path = tmp_path / "audit.jsonl"
    _filled(path)
    lines, expected = tamper(_lines(path))
    path.write_text("\n".join(lines) + "\n")
    verdict = AuditLog(path).verify()
    assert not verdict.ok and verdict.bad_line == expected, verdict


def _append_many(path: str, worker: int) -> None:
    log = AuditLog(Path(path))
    for i in range(20):
        log.append(f"worker-{worker}", "append", {"model_version": str(i)})


def test_concurrent_writers_keep_the_chain_intact(tmp_path) -> None:
    path = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_append_many, args=(str(path), w)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=120)
        assert p.exitcode == 0
    verdict = AuditLog(path).verify()
    assert verdict.ok and verdict.entries == 80


def test_cli_verify_exit_codes(tmp_path) -> None:
    path = tmp_path / "audit.jsonl"
    _filled(path)
    potable = str(Path(sys.executable).with_name("potable"))
    ok = subprocess.run([potable, "audit", "verify", "--path", str(path)], capture_output=True, text=True)
    assert ok.returncode == 0 and "intact: 5 entries" in ok.stdout
    lines, _ = _tamper_delete(_lines(path))
    path.write_text("\n".join(lines) + "\n")
    bad = subprocess.run([potable, "audit", "verify", "--path", str(path)], capture_output=True, text=True)
    assert bad.returncode == 1 and "line 2" in bad.stderr
