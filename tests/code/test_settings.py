"""Settings: one home for local state, overridable stores, no absolute paths baked in."""

from __future__ import annotations

import os

import pytest
import yaml

from core import configs
from core.settings import CONFIG_DIR, Settings
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


@pytest.mark.parametrize(
    "loader", [configs.training, configs.validation, configs.policy, configs.monitoring, configs.release]
)
def test_every_shipped_config_validates(loader) -> None:
    assert loader(Settings()).rules()


def _broken(tmp_path, monkeypatch, name: str, change) -> None:
    raw = yaml.safe_load((CONFIG_DIR / name).read_text(encoding="utf-8"))
    change(raw)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    monkeypatch.setenv(f"POTABLE_{name.split('.')[0].upper()}_CONFIG", str(path))


@pytest.mark.parametrize(
    ("name", "change", "named"),
    [
        ("policy.yaml", lambda c: c["rules"][1].update(limt=c["rules"][1].pop("limit")), "rules.1.limt"),
        ("training.yaml", lambda c: c["tuning"].update(n_trials="many"), "tuning.n_trials"),
        ("training.yaml", lambda c: c["data"].update(evaluation_share=1.5), "data.evaluation_share"),
        ("monitoring.yaml", lambda c: c.update(ks_alfa=0.05), "ks_alfa"),
        ("release.yaml", lambda c: c["slots"].update(green=c["slots"]["blue"]), "slots"),
        ("validation.yaml", lambda c: c["columns"].pop("Turbidity"), "Turbidity"),
        ("policy.yaml", lambda c: c["slices"]["dimensions"]["ph_band"]["labels"].pop(), "slices.dimensions.ph_band"),
    ],
)
def test_a_wrong_key_type_or_range_names_the_file_and_key(tmp_path, monkeypatch, name, change, named) -> None:
    _broken(tmp_path, monkeypatch, name, change)
    loader = getattr(configs, name.split(".")[0])
    with pytest.raises(configs.ConfigError) as refused:
        loader(Settings())
    assert str(tmp_path / name) in str(refused.value) and named in str(refused.value)


def test_a_broken_config_stops_the_flow_before_any_work(tmp_path, monkeypatch, settings) -> None:
    _broken(tmp_path, monkeypatch, "training.yaml", lambda c: c.update(cv_folds=1))
    with pytest.raises(configs.ConfigError, match="cv_folds"):
        training_config(Settings(), None, None)


def test_training_config_overrides_do_not_leak(settings) -> None:
    changed = training_config(settings, trials=3, seed=11)
    assert changed["tuning"]["n_trials"] == 3 and changed["seed"] == 11
    default = training_config(settings, None, None)
    assert default["tuning"]["n_trials"] == 8 and default["seed"] == 42


def test_zero_trials_is_refused(settings) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        training_config(settings, trials=0, seed=None)


def test_configs_are_read_again_when_the_file_changes(tmp_path, monkeypatch) -> None:
    _broken(tmp_path, monkeypatch, "monitoring.yaml", lambda c: c.update(min_samples=7))
    assert configs.monitoring(Settings()).min_samples == 7
    raw = yaml.safe_load((tmp_path / "monitoring.yaml").read_text(encoding="utf-8")) | {"min_samples": 9}
    (tmp_path / "monitoring.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    os.utime(tmp_path / "monitoring.yaml", (1, 1))  # a different mtime even within the clock's resolution
    assert configs.monitoring(Settings()).min_samples == 9
