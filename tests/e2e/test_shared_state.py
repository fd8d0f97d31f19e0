"""Nothing assumes the training machine's disk: a second machine (its own POTABLE_HOME and BentoML store,
the same registry) serves a version it never packaged, by rebuilding its Bento from the registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from core.settings import FEATURES, MODEL_NAME, Settings
from flows.training import train
from tests.conftest import free_port
from tests.processes import stop_group

pytestmark = pytest.mark.e2e


def test_a_version_packaged_elsewhere_is_rebuilt_from_the_registry_and_served(
    prefect_api, settings: Settings, tmp_path: Path
) -> None:
    summary = train(trials=1)
    assert summary["bento_tag"], summary["gate_failures"]
    other_home = tmp_path / "second-machine"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POTABLE_", "BENTOML_", "PREFECT_", "MLFLOW_"))}
    env |= {"POTABLE_HOME": str(other_home), "MLFLOW_TRACKING_URI": settings.tracking_uri}  # the shared registry
    potable = str(Path(sys.executable).with_name("potable"))
    argv = [potable, "serve", "--version", summary["model_version"], "--port", str(port)]
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, answer = time.monotonic() + 240, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                answer = httpx.post(f"http://127.0.0.1:{port}/predict", json=dict.fromkeys(FEATURES, 1.0), timeout=5)
                break
            except httpx.HTTPError:
                time.sleep(1)
        assert answer is not None and answer.status_code == 200, log.read_text()[-3000:]
        assert answer.json()["model_version"] == summary["model_version"]
    finally:
        stop_group(server)
    from mlflow import MlflowClient

    recorded = MlflowClient(settings.tracking_uri).get_model_version(MODEL_NAME, summary["model_version"])
    assert recorded.tags["bento_tag"] == summary["bento_tag"]  # the packaged Bento stays the version's record
    rebuilt = [json.loads(line) for line in (other_home / "audit" / "audit.jsonl").read_text().splitlines()]
    assert [e["action"] for e in rebuilt] == ["bento_rebuilt"]
    assert rebuilt[0]["subject"]["bento_tag"] != summary["bento_tag"]
    assert (other_home / "bentoml" / "bentos" / "water-potability-service").is_dir()
