"""Blue-green release behind a real nginx with real BentoML slots, under continuous load, with real faults."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import psutil
import pytest
import yaml

from benchmarks.loadgen import LoadGenerator
from core.batches import read_batch
from core.environment import child_env
from core.settings import BUNDLED_DATA, CONFIG_DIR, FEATURES, MODEL_NAME, Settings
from deployments.rollout import BlueGreen
from deployments.slots import listeners
from flows.release import ReleaseRefused, ReleaseRolledBack, release
from flows.training import train
from tests.conftest import free_port
from tests.figures import figure

pytestmark = pytest.mark.e2e


def hold_out_samples(n: int = 200) -> list[dict]:
    """Varied live traffic: real rows, so the model-level canary sees a realistic share of potable answers."""
    rows = read_batch(BUNDLED_DATA)[list(FEATURES)].sample(n, random_state=7)
    return [{k: (None if v != v else float(v)) for k, v in row.items()} for row in rows.to_dict("records")]


TRAFFIC = hold_out_samples()


@pytest.fixture(scope="module")
def released(prefect_api, tmp_path_factory):
    """v1 approved and released to blue; v2 trained but not approved. Router and slots stopped at the end."""
    home = tmp_path_factory.mktemp("release") / "home"
    config = yaml.safe_load((CONFIG_DIR / "release.yaml").read_text())
    config["router"]["listen"] = free_port()
    config["slots"] = {"blue": free_port(), "green": free_port()}
    config["watch"] |= {"window_seconds": 8, "max_p99_ms": 3000}  # 2 shared cores: judge errors, not speed
    (home.parent / "release.yaml").write_text(yaml.safe_dump(config))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POTABLE_HOME", str(home))
        mp.setenv("POTABLE_RELEASE_CONFIG", str(home.parent / "release.yaml"))
        for name in (
            "MLFLOW_TRACKING_URI",
            "POTABLE_OPTUNA_STORAGE",
            "POTABLE_S3_ENDPOINT_URL",
            "POTABLE_API_TOKEN",
            "BENTOML_HOME",
        ):
            mp.delenv(name, raising=False)
        mp.setenv("POTABLE_AUTO_APPROVE", "1")
        first = train(trials=1)
        mp.setenv("POTABLE_AUTO_APPROVE", "0")
        second = train(trials=1)
        settings = Settings()
        target = BlueGreen(home, config, lambda *_: None, child_env(settings))
        try:
            outcome = release()
            yield {"home": home, "config": config, "first": first, "second": second, "outcome": outcome}
        finally:
            target.shutdown()


def _state(home) -> dict:
    return json.loads((home / "release" / "state.json").read_text())


def _live_slot(home) -> str:
    return _state(home)["live"]


def _router(released) -> str:
    return f"http://127.0.0.1:{released['config']['router']['listen']}"


def test_first_release_goes_live_on_blue_behind_nginx(released) -> None:
    import httpx

    assert released["outcome"]["status"] == "released" and released["outcome"]["slot"] == "blue"
    _, lines = _last_release_run_and_log()
    watched = [line for line in lines if line.startswith("watch ") and "→ ok" in line]
    assert watched and "predictions through the router" in watched[0], lines  # each interval's verdict
    assert [line for line in lines if line.startswith("released: v")], lines
    answer = httpx.post(f"{_router(released)}/predict", json=TRAFFIC[0], timeout=10)
    assert answer.status_code == 200 and answer.headers["X-Potable-Slot"] == "blue"
    assert answer.json()["model_version"] == released["first"]["model_version"]


def test_a_version_that_is_not_the_champion_is_refused(released) -> None:
    state = release(version=released["second"]["model_version"], return_state=True)
    assert state.name == "ReleaseRefused" and state.is_failed()  # named in the runs list, not a bare Failed
    with pytest.raises(ReleaseRefused, match="not the approved champion"):
        state.result()  # calling the flow raises it


def _kill_slot(home, name: str) -> None:
    """The fault of the issue: SIGKILL of the slot's server and every worker, no goodbye."""
    slot = _state(home)["slots"][name]
    root = psutil.Process(slot["pid"])
    for process in [root, *root.children(recursive=True)]:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass


def test_a_new_slot_killed_right_after_the_switch_is_rolled_back_within_10_s(released) -> None:
    home = released["home"]
    load = LoadGenerator(f"{_router(released)}/predict", TRAFFIC, connections=16).start()
    killed_at: list[float] = []

    def kill_green_once_live() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and _live_slot(home) != "green":
            time.sleep(0.05)
        killed_at.append(time.monotonic())
        _kill_slot(home, "green")

    saboteur = threading.Thread(target=kill_green_once_live, daemon=True)
    saboteur.start()
    try:
        with pytest.raises(ReleaseRolledBack, match="rolled back to slot blue"):
            release(version=released["second"]["model_version"], override_reason="crash rehearsal")
        back_at = time.monotonic()
        time.sleep(3)
    finally:
        load.stop()
    saboteur.join(timeout=5)
    assert _live_slot(home) == "blue"
    failed = [end for began, end, status in load.results if began >= killed_at[0] and not 200 <= status < 300]
    back_s, clean_s = back_at - killed_at[0], (max(failed) - killed_at[0]) if failed else 0.0
    figure(f"\nkilled green: rolled back after {back_s:.2f} s; last failed client request +{clean_s:.2f} s")
    assert back_at - killed_at[0] <= 10
    assert load.failures(since=back_at) == 0, load.failure_kinds(back_at)
    assert not listeners(released["config"]["slots"]["green"])  # nothing of the dead slot serves on
    audit = (home / "audit" / "audit.jsonl").read_text()
    assert "release_override" in audit and "process exited" in audit
    run, lines = _last_release_run_and_log()
    assert run.state.name == "RolledBack" and run.state.is_failed()  # the runs list says what happened
    for step in (
        "slot green: started v",
        "ready after",
        "smoke test on",
        "latency p99",
        "router: switched to slot green",
    ):
        assert [line for line in lines if step in line], (step, lines)
    assert [line for line in lines if line.startswith("rolled back to slot blue")], lines


def _last_release_run_and_log(timeout: float = 20):
    """The newest release run and its log lines, as the run's page in the Prefect UI shows them (log lines
    reach the server shortly after they are written)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import FlowRunSort, LogSort

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["release"])), sort=FlowRunSort.START_TIME_DESC, limit=1
        )
        while True:
            logs = client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])), sort=LogSort.TIMESTAMP_DESC
            )
            lines = [log.message for log in logs]
            if [line for line in lines if line.startswith(("rolled back", "released"))] or time.monotonic() > deadline:
                return run, lines
            time.sleep(0.5)


def test_a_new_slot_that_hangs_after_the_switch_is_rolled_back_within_10_s(released) -> None:
    home = released["home"]
    stopped: list[float] = []
    back: list[float] = []  # when the router was switched back to blue

    def freeze_green_once_live() -> None:  # SIGSTOP: the processes live on but answer nothing
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and _live_slot(home) != "green":
            time.sleep(0.05)
        root = psutil.Process(_state(home)["slots"]["green"]["pid"])
        for process in [root, *root.children(recursive=True)]:
            process.send_signal(signal.SIGSTOP)
        stopped.append(time.monotonic())
        while time.monotonic() < deadline and _live_slot(home) != "blue":
            time.sleep(0.05)
        back.append(time.monotonic())

    saboteur = threading.Thread(target=freeze_green_once_live, daemon=True)
    saboteur.start()
    with pytest.raises(ReleaseRolledBack, match="probes through the router failed"):
        release(version=released["second"]["model_version"], override_reason="hang rehearsal")
    saboteur.join(timeout=10)
    back_s = back[0] - stopped[0]
    figure(f"\nfroze green: switched back to blue after {back_s:.2f} s")
    assert back_s <= 10 and _live_slot(home) == "blue"
    assert not listeners(released["config"]["slots"]["green"])


def test_the_canary_rolls_back_a_version_that_calls_almost_everything_potable(released, tmp_path) -> None:
    """A version that passes a (relaxed) gate but whose threshold says "potable" to nearly every sample."""
    home = released["home"]
    training = yaml.safe_load((CONFIG_DIR / "training.yaml").read_text())
    training["threshold"] = {"strategy": "max_recall_at_false_potable_rate", "max_false_potable_rate": 0.97}
    policy = yaml.safe_load((CONFIG_DIR / "policy.yaml").read_text())
    for rule in policy["rules"]:
        if rule["name"] == "max_false_potable_rate":
            rule["limit"] = 1.0
    (tmp_path / "training.yaml").write_text(yaml.safe_dump(training))
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POTABLE_TRAINING_CONFIG", str(tmp_path / "training.yaml"))
        mp.setenv("POTABLE_POLICY_CONFIG", str(tmp_path / "policy.yaml"))
        lax = train(trials=1)
    assert lax["gate_passed"] and lax["metrics"]["false_potable_rate"] > 0.8, lax["metrics"]
    load = LoadGenerator(f"{_router(released)}/predict", TRAFFIC, connections=8).start()
    try:
        time.sleep(3)  # the previous version's share on this traffic, just before the switch
        try:
            kept = release(version=lax["model_version"], override_reason="canary rehearsal")
        except ReleaseRolledBack as exc:
            assert "potable share" in str(exc)
        else:
            raise AssertionError(f"the canary let it through: {kept}")
    finally:
        load.stop()
    assert _live_slot(home) == "blue" and load.failures() == 0, load.failure_kinds()


def test_blue_to_green_under_load_drops_nothing(released) -> None:
    home = released["home"]
    load = LoadGenerator(f"{_router(released)}/predict", TRAFFIC, connections=32).start()
    try:
        summary = release(version=released["second"]["model_version"], override_reason="second model, reviewed")
    finally:
        load.stop()
    assert summary["status"] == "released" and summary["slot"] == "green" and _live_slot(home) == "green"
    assert load.served() > 100 and load.failures() == 0, load.failure_kinds()
    from mlflow import MlflowClient

    tag = MlflowClient(Settings().tracking_uri).get_model_version(MODEL_NAME, summary["version"]).tags["release"]
    assert tag == "released (green)"


def test_a_killed_live_slot_leaves_no_worker_behind_and_is_restarted(released) -> None:
    home, config = released["home"], released["config"]
    live = _state(home)["slots"]["green"]
    server = psutil.Process(live["pid"]).children()[0] if psutil.Process(live["pid"]).children() else None
    os.kill((server or psutil.Process(live["pid"])).pid, signal.SIGKILL)  # only the server process
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and listeners(config["slots"]["green"]):
        time.sleep(0.2)
    assert not listeners(config["slots"]["green"]), "a BentoML worker kept serving after its server died"
    target = BlueGreen(home, config, lambda *_: None, child_env(Settings()))
    repaired = target.repair()
    assert repaired and repaired["restarted"] and repaired["slot"] == "green", repaired
    import httpx

    answer = httpx.post(f"{_router(released)}/predict", json=TRAFFIC[0], timeout=10)
    assert answer.status_code == 200 and answer.json()["model_version"] == released["second"]["model_version"]


def test_manual_rollback_after_the_window_brings_the_previous_version_back(released) -> None:
    from typer.testing import CliRunner

    from potable.cli import app

    home = released["home"]
    assert _live_slot(home) == "green"  # v2, after the previous test; v1's slot was retired
    result = CliRunner().invoke(app, ["rollout", "rollback"])
    assert result.exit_code == 0, result.output
    state = _state(home)
    assert state["live"] == "blue" and state["slots"]["blue"]["version"] == released["first"]["model_version"]
    assert "manual rollback to v" in (home / "audit" / "audit.jsonl").read_text()
    history = CliRunner().invoke(app, ["rollout", "history", "--json"])
    intervals = json.loads(history.output)
    versions = [i["version"] for i in intervals]
    v1, v2 = released["first"]["model_version"], released["second"]["model_version"]
    assert versions[0] == v1 and v2 in versions and versions[-1] == v1, intervals
    assert intervals[-1]["to"] is None and all(i["to"] for i in intervals[:-1])
