"""Settings: one home for local state, overridable stores, no absolute paths baked in."""

from __future__ import annotations

import pytest

from core.settings import PROJECT_ROOT, Settings
from flows.training import training_config


def test_defaults_live_under_potable_home(potable_home) -> None:
    s = Settings()
    assert s.home_dir == potable_home.resolve()
    assert s.tracking_uri == f"sqlite:///{potable_home.resolve() / 'mlflow.db'}"
    assert s.optuna_url == f"sqlite:///{potable_home.resolve() / 'optuna.db'}"
    assert s.quarantine_dir.parent == s.reports_dir.parent == s.home_dir


def test_default_home_is_relative_to_the_working_directory(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("POTABLE_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert Settings().home_dir == (tmp_path / ".potable").resolve()


def test_mlflow_and_optuna_stores_are_overridable(potable_home, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("POTABLE_OPTUNA_STORAGE", "postgresql://localhost/optuna")
    s = Settings()
    assert s.tracking_uri == "http://127.0.0.1:5000" and s.optuna_url == "postgresql://localhost/optuna"


def test_config_paths_are_inside_the_project() -> None:
    s = Settings()
    assert s.training_config.is_relative_to(PROJECT_ROOT) and s.training_config.exists()


def test_training_config_overrides_do_not_leak(settings) -> None:
    changed = training_config(settings, trials=3, seed=11)
    assert changed["tuning"]["n_trials"] == 3 and changed["seed"] == 11
    default = training_config(settings, None, None)
    assert default["tuning"]["n_trials"] == 8 and default["seed"] == 42


def test_zero_trials_is_refused(settings) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        training_config(settings, trials=0, seed=None)


def test_config_copies_cannot_alter_the_cache(settings) -> None:
    from core.settings import load_config

    first = load_config(settings.policy_config)
    first["rules"][0]["limit"] = 0.99
    assert load_config(settings.policy_config)["rules"][0]["limit"] != 0.99
