"""The README's commands as a user runs them: separate processes, in the documented order, from a fresh
POTABLE_HOME, with only the environment the README tells a user to set (nothing of ours is inherited)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from core.settings import CONFIG_DIR, PROJECT_ROOT
from tests.conftest import free_port

OURS = ("POTABLE_", "PREFECT_", "MLFLOW_", "BENTOML_", "GX_")


def user_environment(**documented: str) -> dict[str, str]:
    """The machine's environment without anything potable, Prefect, MLflow or BentoML, plus what the README says."""
    return {k: v for k, v in os.environ.items() if not k.startswith(OURS)} | documented


@dataclass
class User:
    """Runs `./dev ...` as a person at a terminal would, one process per command."""

    env: dict[str, str]
    transcript: list[str] = field(default_factory=list)

    def run(self, *argv: str, timeout: float = 600, expect: int = 0, **extra_env: str) -> subprocess.CompletedProcess:
        began = time.monotonic()
        done = subprocess.run(
            ["./dev", *argv],
            cwd=PROJECT_ROOT,
            env=self.env | extra_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        took = time.monotonic() - began
        self.transcript.append(f"{' '.join(argv)} → exit {done.returncode} in {took:.1f} s")
        print(self.transcript[-1])
        assert done.returncode == expect, f"./dev {' '.join(argv)} exited {done.returncode}:\n{done.stderr[-4000:]}"
        return done

    def json(self, *argv: str, **extra_env: str) -> dict:
        return json.loads(self.run(*argv, **extra_env).stdout.strip().splitlines()[-1])


def readable_failure(done: subprocess.CompletedProcess, says: str) -> None:
    """A refusal a user can meet: non-zero exit, no traceback, one line that says what is wrong."""
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, done.stderr[-3000:]
    assert says in done.stderr.strip().splitlines()[-1], done.stderr[-1000:]


def release_config(folder: Path, window_seconds: float = 6) -> Path:
    """configs/release.yaml on free ports (POTABLE_RELEASE_CONFIG, a documented setting)."""
    config = yaml.safe_load((CONFIG_DIR / "release.yaml").read_text())
    config["router"]["listen"] = free_port()
    config["slots"] = {"blue": free_port(), "green": free_port()}
    config["watch"] |= {"window_seconds": window_seconds, "max_p99_ms": 3000, "max_p99_ratio": 10}
    path = folder / "release.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def router_version(config_path: Path) -> str:
    port = yaml.safe_load(config_path.read_text())["router"]["listen"]
    sample = {"ph": 7.0, "Hardness": 200.0, "Solids": 20000.0, "Chloramines": 7.0, "Sulfate": 330.0}
    sample |= {"Conductivity": 400.0, "Organic_carbon": 14.0, "Trihalomethanes": 66.0, "Turbidity": 4.0}
    answer = httpx.post(f"http://127.0.0.1:{port}/predict", json=sample, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["model_version"]


@pytest.fixture
def fresh_home(tmp_path: Path) -> Path:
    return tmp_path / "potable-home"
