"""A new home's MLflow store is a copy of the blank, migrated one; an existing or configured store is MLflow's."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from core.mlflow_store import blank_store, make_blank_store, seed_blank_store
from core.settings import Settings


@pytest.fixture(scope="module", autouse=True)
def blank() -> None:
    if not blank_store().is_file():  # ./dev makes it at set-up
        make_blank_store()


def home_settings(home, monkeypatch, tracking_uri: str | None = None) -> Settings:
    monkeypatch.setenv("POTABLE_HOME", str(home))
    for name in ("MLFLOW_TRACKING_URI", "POTABLE_MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    if tracking_uri:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    return Settings()


def test_a_new_home_gets_a_migrated_store_mlflow_opens(tmp_path, monkeypatch) -> None:
    settings = home_settings(tmp_path / "home", monkeypatch)
    assert seed_blank_store(settings)
    assert [p.name for p in settings.home_dir.iterdir()] == ["mlflow.db"]  # nothing staged is left
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    default = client.get_experiment("0")
    assert default.name == "Default" and default.artifact_location == (settings.artifact_root / "0").as_uri()
    created = client.create_experiment("water", artifact_location=settings.artifact_root.as_uri())
    assert client.get_experiment(created).name == "water"


def test_an_existing_store_is_never_replaced(tmp_path, monkeypatch) -> None:
    settings = home_settings(tmp_path, monkeypatch)
    MlflowClient(tracking_uri=settings.tracking_uri).create_experiment("kept")
    assert not seed_blank_store(settings)
    assert MlflowClient(tracking_uri=settings.tracking_uri).get_experiment_by_name("kept") is not None


def test_a_configured_tracking_store_is_left_to_mlflow(tmp_path, monkeypatch) -> None:
    settings = home_settings(tmp_path / "home", monkeypatch, f"sqlite:///{tmp_path / 'elsewhere.db'}")
    assert settings.tracking_uri.endswith("elsewhere.db")
    assert not seed_blank_store(settings)
    assert not (tmp_path / "elsewhere.db").exists() and not (settings.home_dir / "mlflow.db").exists()
