"""Ctrl-C and SIGTERM on a command that waits: a `potable promote` paused for its approver is stopped from the
terminal. It must end within 5 s, mark its run Cancelled (not Running, not a ghost "waiting" approval), and
stop the private Prefect server it started. Before: Ctrl-C hung ~150 s and left the run Running."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from core.settings import PROJECT_ROOT
from potable.prefect_api import PrefectServer
from tests.figures import figure

pytestmark = pytest.mark.journey
POTABLE = str(PROJECT_ROOT / ".venv" / "bin" / "potable")


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POTABLE_", "PREFECT_", "MLFLOW_"))}
    return env | {"POTABLE_HOME": str(home), "POTABLE_AUTO_APPROVE": "0"}


def _paused_promotions(api: str) -> list[dict]:
    body = {"flows": {"name": {"any_": ["promote"]}}}
    runs = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=5).json()
    return [r for r in runs if r["state_type"] == "PAUSED"]


@pytest.fixture(scope="module")
def trained_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("interrupts") / "home"
    done = subprocess.run(
        [POTABLE, "train", "--trials", "1"], env=_env(home), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return home


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_waiting_promotion_stops_cancelled_within_5_s_with_its_server(trained_home, signum) -> None:
    home = trained_home
    command = subprocess.Popen(  # noqa: S603 - our own CLI
        [POTABLE, "promote", "--version", "1"],
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        url_file = home / "run" / "prefect-api.url"
        deadline = time.monotonic() + 240
        api = None
        while time.monotonic() < deadline:
            try:
                api = url_file.read_text().strip() if url_file.exists() else None
                if api and _paused_promotions(api):
                    break
            except (httpx.HTTPError, OSError, ValueError):
                pass
            time.sleep(0.5)
        else:
            raise AssertionError("the promotion never waited for its approver")
        sent = time.monotonic()
        command.send_signal(signum)  # what the terminal sends on Ctrl-C, or a process manager on stop
        _, err = command.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if command.poll() is None:
            command.kill()
            command.wait()
    name = signal.Signals(signum).name
    figure(f"\n{name} on a waiting `potable promote`: exited {command.returncode} in {took:.1f} s")
    assert took <= 5.0, err[-2000:]
    assert command.returncode == 130 and "interrupted; 1 run(s) marked Cancelled" in err, err[-2000:]
    assert "Traceback" not in err, err[-3000:]
    with pytest.raises(httpx.HTTPError):  # its private server is gone with it
        httpx.get(f"{api}/health", timeout=2)
    assert not url_file.exists()

    # A later look at the same home: the run is Cancelled, and nothing is left waiting.
    server = PrefectServer(home / "prefect", home / "logs" / "prefect-api-check.log")
    try:
        server.wait_healthy()
        body = {"flows": {"name": {"any_": ["promote"]}}, "sort": "START_TIME_DESC"}
        latest = httpx.post(f"{server.api_url}/flow_runs/filter", json=body, timeout=10).json()[0]
        assert latest["state_type"] == "CANCELLED", latest["state"]
        assert "stopped from the terminal" in latest["state"]["message"]
        assert _paused_promotions(server.api_url) == []
    finally:
        server.stop()
