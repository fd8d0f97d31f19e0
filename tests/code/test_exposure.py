"""`potable up` beyond loopback: refused unless the Prefect API and the MLflow UI demand credentials."""

from __future__ import annotations

import pytest

from core.settings import Settings
from potable.platform import PlatformError, check_exposure, platform_env, services


def test_loopback_needs_nothing(potable_home) -> None:
    check_exposure(Settings())


def test_a_public_address_without_auth_is_refused_and_says_what_to_set(potable_home, monkeypatch) -> None:
    monkeypatch.setenv("POTABLE_BIND_HOST", "0.0.0.0")  # nosec B104 - the case under test
    with pytest.raises(PlatformError) as refused:
        check_exposure(Settings())
    assert "PREFECT_SERVER_API_AUTH_STRING" in str(refused.value) and "POTABLE_MLFLOW_AUTH_CONFIG" in str(refused.value)
    monkeypatch.setenv("PREFECT_SERVER_API_AUTH_STRING", "ops:a-long-password")
    with pytest.raises(PlatformError, match="POTABLE_MLFLOW_AUTH_CONFIG"):  # both services, not one
        check_exposure(Settings())


def test_with_both_auths_the_services_bind_there_and_demand_credentials(potable_home, monkeypatch, tmp_path) -> None:
    auth = tmp_path / "basic_auth.ini"
    auth.write_text("[mlflow]\nadmin_username = admin\nadmin_password = a-long-password\n")
    monkeypatch.setenv("POTABLE_BIND_HOST", "0.0.0.0")  # nosec B104 - the case under test
    monkeypatch.setenv("PREFECT_SERVER_API_AUTH_STRING", "ops:a-long-password")
    monkeypatch.setenv("POTABLE_MLFLOW_AUTH_CONFIG", str(auth))
    settings = Settings()
    check_exposure(settings)
    argv = {s.name: s.argv for s in services(settings)}
    assert argv["prefect-server"][argv["prefect-server"].index("--host") + 1] == "0.0.0.0"  # nosec B104
    assert argv["mlflow"][-2:] == ["--app-name", "basic-auth"]
    env = platform_env(settings)
    assert env["PREFECT_API_AUTH_STRING"] == "ops:a-long-password" and env["MLFLOW_AUTH_CONFIG_PATH"] == str(auth)
