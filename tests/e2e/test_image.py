"""A real OCI image: Bento → buildah (no Docker daemon) → a real local registry; digests agree everywhere;
with `image.build_local` on, the local blue-green runs that pushed image by digest (podman), not the Bento."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import httpx
import psutil
import pytest
import yaml
from mlflow import MlflowClient

from core.environment import child_env
from core.settings import CONFIG_DIR, MODEL_NAME, Settings
from deployments.rollout import BlueGreen
from flows.release import publish_image, release
from flows.training import train
from tests.conftest import free_port

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("buildah") is None or shutil.which("podman") is None,
        reason="buildah and podman are installed by ./dev test and .ci/run",
    ),
]


SAMPLE = {
    "ph": 7.08,
    "Hardness": 204.89,
    "Solids": 20791.3,
    "Chloramines": 7.3,
    "Sulfate": 368.5,
    "Conductivity": 564.3,
    "Organic_carbon": 10.38,
    "Trihalomethanes": 86.99,
    "Turbidity": 2.96,
}
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Debian's docker-registry (distribution 2.8) on a free loopback port, filesystem storage."""
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = root / "config.yml"
    config.write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    process = subprocess.Popen(
        ["docker-registry", "serve", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        for _ in range(100):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def pushed(prefect_api, registry, tmp_path_factory):
    """A trained, approved version whose image is built and pushed; the release config runs slots from
    images (`image.build_local`). Router and slots (containers) stopped at the end."""
    home = tmp_path_factory.mktemp("image") / "home"
    config = yaml.safe_load((CONFIG_DIR / "release.yaml").read_text())
    config["router"] |= {"listen": free_port()}
    config["slots"] = {"blue": free_port(), "green": free_port()}
    config["watch"] |= {"window_seconds": 6, "max_p99_ms": 3000, "max_p99_ratio": 10}
    config["image"]["build_local"] = True
    (home.parent / "release.yaml").write_text(yaml.safe_dump(config))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POTABLE_HOME", str(home))
        mp.setenv("POTABLE_RELEASE_CONFIG", str(home.parent / "release.yaml"))
        mp.setenv("POTABLE_IMAGE_REGISTRY", registry)
        mp.setenv("POTABLE_AUTO_APPROVE", "1")
        for name in ("MLFLOW_TRACKING_URI", "POTABLE_OPTUNA_STORAGE", "POTABLE_S3_ENDPOINT_URL", "POTABLE_API_TOKEN"):
            mp.delenv(name, raising=False)
        version = train(trials=1)["model_version"]
        image = publish_image(version, Settings(), "test")
        target = BlueGreen(home, config, lambda *_: None, child_env(Settings()))
        try:
            yield {"home": home, "config": config, "version": version, "image": image, "target": target}
        finally:
            target.shutdown()


def _audit(home) -> list[dict]:
    return [json.loads(line) for line in (home / "audit" / "audit.jsonl").read_text().splitlines()]


def test_image_is_built_pushed_and_its_digest_recorded(pushed, registry) -> None:
    version, image = pushed["version"], pushed["image"]
    repository, tag = image["image"].removeprefix(f"{registry}/").split(":")
    assert tag.startswith(f"{version}-") and repository == "potable-service"
    assert repository in httpx.get(f"http://{registry}/v2/_catalog", timeout=10).json()["repositories"]
    assert tag in httpx.get(f"http://{registry}/v2/{repository}/tags/list", timeout=10).json()["tags"]
    manifest = httpx.head(
        f"http://{registry}/v2/{repository}/manifests/{tag}",
        headers={"Accept": f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"},
        timeout=10,
    )
    assert manifest.headers["Docker-Content-Digest"] == image["digest"]
    tags = MlflowClient(Settings().tracking_uri).get_model_version(MODEL_NAME, version).tags
    assert tags["image_digest"] == image["digest"] and tags["image"] == image["image"]
    pushes = [e for e in _audit(pushed["home"]) if e["action"] == "image_pushed"]
    assert pushes and pushes[-1]["subject"]["image_digest"] == image["digest"]
    user = subprocess.run(
        ["buildah", "inspect", "--type", "image", "--format", "{{.OCIv1.Config.User}}", image["local"]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert user not in ("", "root", "0")  # the server runs as a non-root user


def _podman(*args: str) -> str:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=True).stdout.strip()


def test_local_slots_run_the_pushed_image_by_digest(pushed, registry) -> None:
    """What is rehearsed is what is shipped: the live slot is a container of the registry's image, by digest;
    its answers, its prediction log and the rollout history all say so."""
    home, version, digest = pushed["home"], pushed["version"], pushed["image"]["digest"]
    outcome = release()
    assert outcome["status"] == "released" and outcome["slot"] == "blue", outcome
    slot = json.loads((home / "release" / "state.json").read_text())["slots"]["blue"]
    reference = f"{registry}/potable-service@{digest}"
    assert slot["image"] == reference and slot["container"]
    inspected = json.loads(_podman("container", "inspect", slot["container"]))[0]
    assert inspected["State"]["Running"] and inspected["ImageName"] == reference
    pulled = json.loads(_podman("image", "inspect", reference))[0]
    assert reference in pulled["RepoDigests"] and inspected["Image"] == pulled["Id"]  # the container runs it
    # the server in the container is not root (its processes are visible from here by their host PIDs)
    server = psutil.Process(inspected["State"]["Pid"])
    assert server.uids().real != 0 and "bentoml" in " ".join(server.cmdline())
    router = f"http://127.0.0.1:{pushed['config']['router']['listen']}"
    answer = httpx.post(f"{router}/predict", json=SAMPLE, timeout=10)
    assert answer.status_code == 200 and answer.json()["model_version"] == version
    assert answer.headers["X-Potable-Slot"] == "blue"
    logged = list((home / "predictions" / slot["container"]).glob("predictions-*.jsonl"))
    assert logged and any(version in path.read_text() for path in logged)  # the mounted log folder is written
    switched = [e for e in _audit(home) if e["action"] == "switched"][-1]["details"]
    assert switched["runs"] == f"image {reference}" and switched["digest"] == digest
    from typer.testing import CliRunner

    from potable.cli import app

    history = json.loads(CliRunner().invoke(app, ["rollout", "history", "--json"]).output)
    assert history[-1]["runs"] == f"image {reference}" and history[-1]["to"] is None


def test_a_killed_container_slot_is_restarted_from_the_same_image(pushed) -> None:
    """A real fault: SIGKILL of the container's server; the supervisor's repair brings the same image back."""
    home, target = pushed["home"], pushed["target"]
    before = json.loads((home / "release" / "state.json").read_text())["slots"]["blue"]
    server = json.loads(_podman("container", "inspect", before["container"]))[0]["State"]["Pid"]
    os.kill(server, signal.SIGKILL)
    psutil.Process(before["pid"]).wait(timeout=30)  # `podman run` ends with its container
    repaired = target.repair()
    assert repaired and repaired["restarted"], repaired
    after = json.loads((home / "release" / "state.json").read_text())["slots"]["blue"]
    assert after["image"] == before["image"] and after["pid"] != before["pid"]
    router = f"http://127.0.0.1:{pushed['config']['router']['listen']}"
    assert httpx.post(f"{router}/predict", json=SAMPLE, timeout=10).status_code == 200
    target.shutdown()
    listed = _podman("ps", "--all", "--filter", f"name={after['container']}", "--format", "{{.Names}}")
    assert listed == ""  # stopping the slot removes its container
