"""A slot: one BentoML server (a Bento served directly) on a fixed port, in its own process group."""

from __future__ import annotations

import os
import signal
import subprocess  # nosec B404 # runs our own bentoml CLI with fixed arguments
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import psutil


class SlotError(RuntimeError):
    """The slot did not become ready (its log says why)."""


@dataclass
class SlotProcess:
    name: str
    port: int
    bento_tag: str
    version: str
    pid: int
    started: float  # process create time: a recycled PID is never taken for ours
    log: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def to_dict(self) -> dict:
        return asdict(self)

    def alive(self) -> bool:
        try:
            process = psutil.Process(self.pid)
            return abs(process.create_time() - self.started) < 0.01 and process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False


def fault_file(home: Path, slot: str) -> Path:
    """Rehearsal switch: while this file exists the slot's predictions fail (see bentos/service.py)."""
    return home / "run" / f"fault-{slot}"


def start_slot(name: str, port: int, bento_tag: str, version: str, home: Path) -> SlotProcess:
    log = home / "logs" / f"slot-{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "POTABLE_HOME": str(home), "POTABLE_FAULT_FILE": str(fault_file(home, name))}
    bentoml_cli = str(Path(sys.executable).with_name("bentoml"))
    with open(log, "ab") as out:
        process = subprocess.Popen(  # nosec B603 # fixed argv, no shell
            [bentoml_cli, "serve", bento_tag, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started = psutil.Process(process.pid).create_time()
    return SlotProcess(name, port, bento_tag, version, process.pid, started, str(log))


def wait_ready(slot: SlotProcess, timeout: float) -> float:
    """Seconds until /readyz answers 200; SlotError if the process dies or time runs out."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if not slot.alive():
            raise SlotError(f"slot {slot.name} exited before it was ready; see {slot.log}")
        try:
            if httpx.get(f"{slot.url}/readyz", timeout=2).status_code == 200:
                return time.monotonic() - began
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SlotError(f"slot {slot.name} not ready after {timeout:.0f} s; see {slot.log}")


def stop_slot(slot: SlotProcess, timeout: float = 30.0) -> None:
    """SIGTERM the slot's process group (BentoML drains), SIGKILL what is left."""
    if not slot.alive():
        return
    members = [psutil.Process(slot.pid), *psutil.Process(slot.pid).children(recursive=True)]
    os.killpg(slot.pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(members, timeout=timeout)
    if alive:
        try:
            os.killpg(slot.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        psutil.wait_procs(alive, timeout=5)
