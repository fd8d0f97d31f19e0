"""A slot: one BentoML server on a fixed port, whole or not at all: the Bento served directly, or the
version's pushed OCI image run by podman (no daemon) by digest, so the local blue-green runs the artifact
production runs.

`bentoml serve` runs its workers in their own sessions: killing the server (or its process group) used
to leave workers behind that kept serving the old model on the slot's port. Where the kernel allows it
(root, or user namespaces), a slot therefore runs in its own PID namespace (`unshare --pid --kill-child`):
when the slot's server or the unshare process dies, the kernel ends every process of the slot. Stopping
a slot also ends whatever BentoML process still listens on its port, so nothing of an old slot serves on.
"""

from __future__ import annotations

import hashlib
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


# Where a container slot's prediction log goes inside it; the host's folder for that slot is mounted there.
CONTAINER_HOME = "/potable"


class SlotError(RuntimeError):
    """The slot did not become ready (its log says why)."""


@dataclass(frozen=True)
class SlotImage:
    """Run the slot from this OCI image rather than from the Bento (configs/release.yaml `image`)."""

    reference: str  # registry/repository@sha256:…: by digest, so what runs is exactly what was pushed
    runtime: str  # podman's OCI runtime
    nofile: int
    nproc: int
    tls_verify: bool  # when pulling from the registry


@dataclass
class SlotProcess:
    name: str
    port: int
    bento_tag: str
    version: str
    pid: int  # the Bento's `bentoml serve`, or the `podman run` attached to the slot's container
    started: float  # process create time: a recycled PID is never taken for ours
    log: str
    image: str = ""  # the image reference run by digest; "" when the Bento is served directly
    container: str = ""  # podman's name for the slot's container

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


def start_slot(
    name: str,
    port: int,
    bento_tag: str,
    version: str,
    home: Path,
    env: dict[str, str],
    image: SlotImage | None = None,
) -> SlotProcess:
    """`env` is the whole environment of the slot (core.environment.child_env): nothing is inherited.
    With `image`, the slot is that image's container (pulled first), else the Bento served directly."""
    log = home / "logs" / f"slot-{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    container = container_name(home, name) if image is not None else ""
    sweep_port(port)  # an orphan of an earlier slot must not answer in this one's place
    if image is not None:
        remove_container(container)
        pull(image)
        argv = container_argv(image, container, port, home, env)
    else:
        env = env | {"BENTOML_HOME": str(slot_bentoml_home(home, name, Path(env["BENTOML_HOME"])))}
        bentoml_cli = str(Path(sys.executable).with_name("bentoml"))
        argv = [*namespace_prefix(), bentoml_cli, "serve", bento_tag, "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "ab") as out:
        process = subprocess.Popen(  # nosec B603 # fixed argv, no shell
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    started = psutil.Process(process.pid).create_time()
    reference = image.reference if image else ""
    return SlotProcess(name, port, bento_tag, version, process.pid, started, str(log), reference, container)


def podman() -> str:
    found = shutil.which("podman")
    if found is None:
        raise SlotError("podman is not installed: image.build_local runs the slots from the image (apt install podman)")
    return found


def container_name(home: Path, slot: str) -> str:
    """One name per home and slot: two platforms on one machine (parallel tests) never share a container."""
    return f"potable-{hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:10]}-{slot}"


def pull(image: SlotImage) -> None:
    """The image into podman's storage (layers already there are not fetched again)."""
    tls = f"--tls-verify={str(image.tls_verify).lower()}"
    done = subprocess.run(  # nosec B603 # fixed argv
        [podman(), "pull", "--quiet", tls, image.reference], capture_output=True, text=True, timeout=1800
    )
    if done.returncode != 0:
        raise SlotError(f"could not pull {image.reference}: {(done.stderr or done.stdout).strip()[-1000:]}")


def container_argv(image: SlotImage, container: str, port: int, home: Path, env: dict[str, str]) -> list[str]:
    """`podman run` of the slot: the host's loopback (no port mapping, nothing beyond 127.0.0.1), the service
    settings of `env` passed by name (values stay out of the command line), the slot's own prediction-log
    folder mounted in and handed to the image's non-root user (`:U`)."""
    predictions = home / "predictions" / container
    predictions.mkdir(parents=True, exist_ok=True)
    settings = sorted(k for k in env if k.startswith("POTABLE_") and k != "POTABLE_HOME")
    return [
        *(podman(), "--runtime", image.runtime, "run", "--rm", "--replace", "--name", container),
        *("--network", "host", "--ulimit", f"nofile={image.nofile}:{image.nofile}"),
        *("--ulimit", f"nproc={image.nproc}:{image.nproc}"),
        *("--volume", f"{predictions}:{CONTAINER_HOME}/predictions:U", "--env", f"POTABLE_HOME={CONTAINER_HOME}"),
        *(arg for key in settings for arg in ("--env", key)),
        *(image.reference, "serve", "--host", "127.0.0.1", "--port", str(port)),
    ]


def remove_container(container: str) -> None:
    """End and remove the slot's container if there is one (SIGTERM first: BentoML drains)."""
    subprocess.run(  # nosec B603 # fixed argv
        [podman(), "rm", "--force", "--ignore", "--time", "10", container], capture_output=True, timeout=60
    )


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
    if slot.container:
        remove_container(slot.container)  # the container outlives a killed `podman run`
    sweep_port(slot.port)
