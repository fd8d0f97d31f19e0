"""A slot: one BentoML server (a Bento served directly) on a fixed port, whole or not at all.

`bentoml serve` runs its workers in their own sessions: killing the server (or its process group) used
to leave workers behind that kept serving the old model on the slot's port. Where the kernel allows it
(root, or user namespaces), a slot therefore runs in its own PID namespace (`unshare --pid --kill-child`):
when the slot's server or the unshare process dies, the kernel ends every process of the slot. Stopping
a slot also ends whatever BentoML process still listens on its port, so nothing of an old slot serves on.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess  # nosec B404 # runs our own bentoml CLI with fixed arguments
import sys
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import httpx
import psutil

# A release waits for the slot: polling every 0.3 s added 0.15 s on average to a ~5 s start (slot_start.py).
READY_POLL_SECONDS = 0.05


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


@lru_cache(maxsize=1)
def namespace_prefix() -> tuple[str, ...]:
    """`unshare` in a new PID namespace if this machine allows it, else nothing (the port sweep still runs)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    argv = (unshare, "--pid", "--fork", "--kill-child", "--mount-proc")
    probe = subprocess.run([*argv, "true"], capture_output=True, timeout=10)  # nosec B603 # fixed argv
    return argv if probe.returncode == 0 else ()


def slot_bentoml_home(home: Path, name: str, store: Path) -> Path:
    """A BENTOML_HOME per slot: the shared Bento and model stores linked in, everything else its own.

    BentoML wipes `<BENTOML_HOME>/prometheus_multiproc_dir` when a server starts; with one home for both
    slots, starting the new slot reset the live slot's /metrics (counters went backwards mid-release).
    """
    own = home / "run" / f"bentoml-{name}"
    own.mkdir(parents=True, exist_ok=True)
    for folder in ("bentos", "models"):
        (store / folder).mkdir(parents=True, exist_ok=True)
        link = own / folder
        if not link.is_symlink():
            link.symlink_to(store / folder, target_is_directory=True)
    return own


def start_slot(name: str, port: int, bento_tag: str, version: str, home: Path, env: dict[str, str]) -> SlotProcess:
    """`env` is the whole environment of the slot (core.environment.child_env): nothing is inherited."""
    log = home / "logs" / f"slot-{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = env | {"BENTOML_HOME": str(slot_bentoml_home(home, name, Path(env["BENTOML_HOME"])))}
    sweep_port(port)  # an orphan of an earlier slot must not answer in this one's place
    bentoml_cli = str(Path(sys.executable).with_name("bentoml"))
    argv = [*namespace_prefix(), bentoml_cli, "serve", bento_tag, "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "ab") as out:
        process = subprocess.Popen(  # nosec B603 # fixed argv, no shell
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
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
        time.sleep(READY_POLL_SECONDS)
    raise SlotError(f"slot {slot.name} not ready after {timeout:.0f} s; see {slot.log}")


def listeners(port: int) -> list[psutil.Process]:
    """BentoML processes listening on a loopback port (other programs on it are none of ours)."""
    found = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            try:
                process = psutil.Process(conn.pid)
                if "bentoml" in " ".join(process.cmdline()):
                    found.append(process)
            except psutil.Error:
                continue
    return found


def sweep_port(port: int, timeout: float = 10.0) -> int:
    """End every BentoML process still listening on the slot's port; returns how many there were."""
    left = listeners(port)
    for process in left:
        try:
            process.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(left, timeout=timeout)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            pass
    return len(left)


def stop_slot(slot: SlotProcess, timeout: float = 30.0) -> None:
    """SIGTERM the slot's process group (BentoML drains), SIGKILL what is left, then sweep its port."""
    if slot.alive():
        members = [psutil.Process(slot.pid), *psutil.Process(slot.pid).children(recursive=True)]
        try:
            os.killpg(slot.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        for member in members:  # a hung (stopped) slot, workers included, handles its SIGTERM too
            try:
                member.send_signal(signal.SIGCONT)
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(members, timeout=timeout)
        if alive:
            try:
                os.killpg(slot.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            psutil.wait_procs(alive, timeout=5)
    sweep_port(slot.port)
