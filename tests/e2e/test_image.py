"""A real OCI image: Bento → buildah (no Docker daemon) → a real local registry; digests agree everywhere."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import httpx
import pytest
from mlflow import MlflowClient

from core.settings import MODEL_NAME, Settings
from flows.release import publish_image
from flows.training import train
from tests.conftest import free_port

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("buildah") is None, reason="buildah is installed by ./dev test and .ci/run"),
]


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


def test_image_is_built_pushed_and_its_digest_recorded(prefect_api, settings, registry, monkeypatch) -> None:
    monkeypatch.setenv("POTABLE_IMAGE_REGISTRY", registry)
    summary = train(trials=1)
    version = summary["model_version"]
    pushed = publish_image(version, Settings(), "test")
    repository, tag = pushed["image"].removeprefix(f"{registry}/").split(":")
    assert tag.startswith(f"{version}-") and repository == "potable-service"
    assert repository in httpx.get(f"http://{registry}/v2/_catalog", timeout=10).json()["repositories"]
    assert tag in httpx.get(f"http://{registry}/v2/{repository}/tags/list", timeout=10).json()["tags"]
    manifest = httpx.head(
        f"http://{registry}/v2/{repository}/manifests/{tag}",
        headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
        },
        timeout=10,
    )
    assert manifest.headers["Docker-Content-Digest"] == pushed["digest"]
    tags = MlflowClient(Settings().tracking_uri).get_model_version(MODEL_NAME, version).tags
    assert tags["image_digest"] == pushed["digest"] and tags["image"] == pushed["image"]
    entries = [json.loads(line) for line in (settings.home_dir / "audit" / "audit.jsonl").read_text().splitlines()]
    pushes = [e for e in entries if e["action"] == "image_pushed"]
    assert pushes and pushes[-1]["subject"]["image_digest"] == pushed["digest"]
    user = subprocess.run(
        [
            "buildah",
            "inspect",
            "--type",
            "image",
            "--format",
            "{{.OCIv1.Config.User}}",
            f"localhost/{repository}:{tag}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert user not in ("", "root", "0")  # the server runs as a non-root user
