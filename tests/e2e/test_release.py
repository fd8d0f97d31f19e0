"""Blue-green release behind a real nginx with real BentoML slots, under continuous load."""

from __future__ import annotations

import json
import threading
import time

import pytest
import yaml

from benchmarks.loadgen import LoadGenerator
from deployments.rollout import BlueGreen
from deployments.slots import fault_file
from flows.release import ReleaseRefused, ReleaseRolledBack, release
from flows.training import train
from potable.settings import CONFIG_DIR, FEATURES, MODEL_NAME, Settings
from tests.conftest import free_port

pytestmark = pytest.mark.e2e
SAMPLE = dict.fromkeys(FEATURES, 1.0) | {"ph": 7.0, "Hardness": 200.0, "Solids": 20000.0, "Conductivity": 400.0}


@pytest.fixture(scope="module")
def released(prefect_api, tmp_path_factory):
    """v1 approved and released to blue; v2 trained but not approved. Router and slots stopped at the end."""
    home = tmp_path_factory.mktemp("release") / "home"
    config = yaml.safe_load((CONFIG_DIR / "release.yaml").read_text())
    config["router"]["listen"] = free_port()
    config["slots"] = {"blue": free_port(), "green": free_port()}
    config["watch"] |= {"window_seconds": 8}
    (home.parent / "release.yaml").write_text(yaml.safe_dump(config))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POTABLE_HOME", str(home))
        mp.setenv("POTABLE_RELEASE_CONFIG", str(home.parent / "release.yaml"))
        for name in ("MLFLOW_TRACKING_URI", "POTABLE_OPTUNA_STORAGE", "POTABLE_S3_ENDPOINT_URL", "POTABLE_API_TOKEN"):
            mp.delenv(name, raising=False)
        mp.setenv("POTABLE_AUTO_APPROVE", "1")
        first = train(trials=1)
        mp.setenv("POTABLE_AUTO_APPROVE", "0")
        second = train(trials=1)
        target = BlueGreen(home, config, lambda *_: None)
        try:
            outcome = release()
            yield {"home": home, "config": config, "first": first, "second": second, "outcome": outcome}
        finally:
            target.shutdown()


def _live_slot(home) -> str:
    return json.loads((home / "release" / "state.json").read_text())["live"]


def test_first_release_goes_live_on_blue_behind_nginx(released) -> None:
    import httpx

    assert released["outcome"]["status"] == "released" and released["outcome"]["slot"] == "blue"
    router = f"http://127.0.0.1:{released['config']['router']['listen']}"
    answer = httpx.post(f"{router}/predict", json=SAMPLE, timeout=10)
    assert answer.status_code == 200 and answer.headers["X-Potable-Slot"] == "blue"
    assert answer.json()["model_version"] == released["first"]["model_version"]


def test_a_version_that_is_not_the_champion_is_refused(released) -> None:
    with pytest.raises(ReleaseRefused, match="not the approved champion"):
        release(version=released["second"]["model_version"])


def test_broken_green_is_rolled_back_and_the_live_path_ends_on_blue(released) -> None:
    home, config = released["home"], released["config"]
    load = LoadGenerator(f"http://127.0.0.1:{config['router']['listen']}/predict", SAMPLE, connections=32).start()
    switched_at: list[float] = []

    def break_green_once_live() -> None:  # the slot passes its checks, then fails once it takes traffic
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and _live_slot(home) != "green":
            time.sleep(0.05)
        switched_at.append(time.monotonic())
        fault_file(home, "green").write_text("error")

    saboteur = threading.Thread(target=break_green_once_live, daemon=True)
    saboteur.start()
    try:
        with pytest.raises(ReleaseRolledBack, match="rolled back to slot blue"):
            release(version=released["second"]["model_version"], override_reason="rollback rehearsal")
        rolled_back_at = time.monotonic()
        time.sleep(3)
    finally:
        load.stop()
        fault_file(home, "green").unlink(missing_ok=True)
    assert _live_slot(home) == "blue"
    assert load.failures(since=switched_at[0]) > 0  # the fault really reached the live path
    assert load.failures(since=rolled_back_at) == 0, load.failure_kinds(rolled_back_at)
    audit = (home / "audit" / "audit.jsonl").read_text()
    assert "release_override" in audit and "rolled_back" in audit


def test_blue_to_green_under_load_drops_nothing(released) -> None:
    home, config = released["home"], released["config"]
    load = LoadGenerator(f"http://127.0.0.1:{config['router']['listen']}/predict", SAMPLE, connections=32).start()
    try:
        summary = release(version=released["second"]["model_version"], override_reason="second model, reviewed")
    finally:
        load.stop()
    assert summary["status"] == "released" and summary["slot"] == "green" and _live_slot(home) == "green"
    assert load.served() > 100 and load.failures() == 0, load.failure_kinds()
    from mlflow import MlflowClient

    tag = MlflowClient(Settings().tracking_uri).get_model_version(MODEL_NAME, summary["version"]).tags["release"]
    assert tag == "released (green)"


def test_manual_rollback_after_the_window_brings_the_previous_version_back(released) -> None:
    from typer.testing import CliRunner

    from potable.cli import app

    home = released["home"]
    assert _live_slot(home) == "green"  # v2, after the previous test; v1's slot was retired
    result = CliRunner().invoke(app, ["rollout", "rollback"])
    assert result.exit_code == 0, result.output
    state = json.loads((home / "release" / "state.json").read_text())
    assert state["live"] == "blue" and state["slots"]["blue"]["version"] == released["first"]["model_version"]
    assert "manual rollback to v" in (home / "audit" / "audit.jsonl").read_text()
