"""A private Prefect API server for one CLI command, when no PREFECT_API_URL is configured.

Prefect would start its own temporary server at the first API call; doing it here, before the ML stack
is imported, runs the server's ~10 s start on the other core while this process imports (~10 s), and
keeps its SQLite database under POTABLE_HOME so the runs stay visible in the UI afterwards.
Only the standard library (and core/blank_sqlite.py, itself standard library only) is imported here: it
must be cheap to call first.

A server on a new home first migrates an empty SQLite database and registers Prefect's block types
(~14 s here, against ~6 s for a later start). That result is the same for every home on one Prefect
version, so set-up (`./dev`, `python -m potable.prefect_api`) makes it once, next to the installed
packages, and a new home starts from a copy of it (`seed_blank_database`, core/blank_sqlite.py).
Without it, or for another Prefect version, the server migrates as before.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess  # nosec B404 # starts Prefect's own server CLI with a fixed argv
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.blank_sqlite import blank_path, copy_blank, keep_as_blank

# A seeded home's first start skips block registration: the copy holds the block types this venv's Prefect
# and collections registered at set-up. Prefect's memo of that registration cannot carry over (its hash
# includes the database URL, which names the home), and checking it imports every collection (prefect-aws:
# ~1 s) before the server answers; the next start registers and memoizes as usual.
SEEDED_START_ENV = {
    "PREFECT_SERVER_REGISTER_BLOCKS_ON_START": "false",
    "PREFECT_SERVER_MEMOIZE_BLOCK_AUTO_REGISTRATION": "false",
}


class PrefectApiError(RuntimeError):
    """The private Prefect server did not come up."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def default_sigint() -> None:
    # A command started with `&` from a script ignores SIGINT, and Prefect turns SIGTERM into SIGINT:
    # restore the default so the server really stops when asked.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class PrefectServer:
    """`prefect server start` (no UI, no scheduler) on a free loopback port, owned by this process."""

    def __init__(self, prefect_home: Path, log_path: Path):
        # Two commands on one fresh home would both create the server's SQLite schema at once ("table …
        # already exists"): one server starts at a time per home, until it answers (stdlib flock, held
        # by this process; released by wait_healthy/stop, or by the kernel if the process dies).
        prefect_home.mkdir(parents=True, exist_ok=True)
        self._start_lock = open(prefect_home / "server-start.lock", "w")  # noqa: SIM115 - closed in _started()
        fcntl.flock(self._start_lock, fcntl.LOCK_EX)
        seeded = seed_blank_database(prefect_home)
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        argv = [
            sys.executable,
            "-m",
            "potable.prefect_server",  # `prefect` with a quick exit: the command waits for the server to end
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--no-ui",
            "--no-scheduler",
            "--no-late-runs",
            "--analytics-off",
        ]
        env = {**os.environ, "PREFECT_HOME": str(prefect_home)} | (SEEDED_START_ENV if seeded else {})
        env.pop("PREFECT_API_URL", None)
        self.process = subprocess.Popen(  # nosec B603 # fixed argv, no shell
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=default_sigint,  # noqa: PLW1509
            # Its own session: Ctrl-C in the terminal reaches the command, which reports the interrupted run
            # to this server first and then stops it (stop()), instead of both dying at once.
            start_new_session=True,
        )

    def wait_healthy(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PrefectApiError(
                    f"Prefect server exited with code {self.process.returncode}; see {self._log_path}"
                )
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:  # nosec B310 # http URL we built for loopback
                    if response.status == 200:
                        self._started()
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise PrefectApiError(f"Prefect server not healthy after {timeout:.0f} s; see {self._log_path}")

    def _started(self) -> None:
        if not self._start_lock.closed:
            fcntl.flock(self._start_lock, fcntl.LOCK_UN)
            self._start_lock.close()

    def stop(self) -> None:
        self._started()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()


def blank_database() -> Path:
    """The blank database of the installed Prefect version, block types registered (inside the venv)."""
    return blank_path("prefect", "prefect.db")


def seed_blank_database(prefect_home: Path) -> bool:
    """Give a home with no database a copy of the blank one, if set-up made it; True when copied.
    Only for the default SQLite database (a configured database URL is left to Prefect)."""
    if os.environ.get("PREFECT_SERVER_DATABASE_CONNECTION_URL"):
        return False
    return copy_blank(blank_database(), prefect_home / "prefect.db")


def make_blank_database() -> Path:
    """Start Prefect's server once on an empty home, stop it, keep its database as the blank one."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="potable-blank-prefect-") as scratch:
        home = Path(scratch)
        os.environ.pop("PREFECT_SERVER_DATABASE_CONNECTION_URL", None)
        server = PrefectServer(home / "prefect", home / "prefect-api.log")
        try:
            server.wait_healthy()
        finally:
            server.stop()
        return keep_as_blank(home / "prefect" / "prefect.db", blank_database())


@contextmanager
def prefect_api(home: Path) -> Iterator[PrefectServer | None]:
    """Yield a started private server (None when PREFECT_API_URL points at a real one); stop it after."""
    if os.environ.get("PREFECT_API_URL"):
        yield None
        return
    shared = platform_api_url(home)
    if shared:  # `potable up` runs a server for this home: use it, so the runs show in its UI
        os.environ["PREFECT_API_URL"] = shared
        try:
            yield None
        finally:
            _drain_prefect_clients()
            os.environ.pop("PREFECT_API_URL", None)
        return
    server = PrefectServer(home / "prefect", home / "logs" / "prefect-api.log")
    os.environ["PREFECT_API_URL"] = server.api_url
    # Other potable commands (e.g. `potable approve` answering a waiting promotion) find the API here.
    url_file = api_url_file(home)
    url_file.parent.mkdir(parents=True, exist_ok=True)
    url_file.write_text(server.api_url, encoding="utf-8")
    try:
        yield server
    finally:
        _drain_prefect_clients()
        os.environ.pop("PREFECT_API_URL", None)
        if url_file.exists() and url_file.read_text(encoding="utf-8") == server.api_url:
            url_file.unlink()
        server.stop()


def api_url_file(home: Path) -> Path:
    return home / "run" / "prefect-api.url"


def platform_api_url(home: Path) -> str | None:
    """The API of `potable up` for this home, if it answers."""
    path = home / "run" / "platform-api.url"
    if not path.is_file():
        return None
    url = path.read_text(encoding="utf-8").strip()
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:  # nosec B310 # loopback URL we wrote
            return url if response.status == 200 else None
    except OSError:
        return None


def running_api_url(home: Path) -> str | None:
    """PREFECT_API_URL, else `potable up`'s server, else a potable command's private server on this home."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    if shared := platform_api_url(home):
        return shared
    path = api_url_file(home)
    return path.read_text(encoding="utf-8").strip() if path.exists() else None


def _drain_prefect_clients() -> None:
    """Send buffered run logs and events before the server goes; otherwise their workers retry at exit."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    try:
        APILogWorker.drain_all(timeout=10)
        EventsWorker.drain_all(timeout=10)
    except Exception as exc:  # noqa: BLE001 - losing a log line must not fail the command
        print(f"warning: could not flush Prefect logs/events: {exc}", file=sys.stderr)


if __name__ == "__main__":  # set-up: ./dev runs this once per installed Prefect version
    if not blank_database().is_file():
        print(f"blank Prefect database made: {make_blank_database()}", file=sys.stderr)
