"""A new home's private Prefect server starts from the blank database set-up made, never from half a copy."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from potable import prefect_api
from potable.prefect_api import PrefectServer, blank_database, make_blank_database, seed_blank_database


@pytest.fixture
def template(tmp_path, monkeypatch) -> Path:
    blank = tmp_path / "blank"
    blank.mkdir()
    (blank / "prefect.db").write_text("blank prefect.db", encoding="utf-8")
    monkeypatch.setattr(prefect_api, "blank_database", lambda: blank / "prefect.db")
    monkeypatch.delenv("PREFECT_SERVER_DATABASE_CONNECTION_URL", raising=False)
    return blank


def test_a_new_home_gets_a_copy_of_the_blank_database(template, tmp_path) -> None:
    home = tmp_path / "home" / "prefect"
    assert seed_blank_database(home)
    assert {p.name for p in home.iterdir()} == {"prefect.db"}  # no partial files left
    assert (home / "prefect.db").read_text(encoding="utf-8") == "blank prefect.db"


def test_an_existing_database_is_never_replaced(template, tmp_path) -> None:
    home = tmp_path / "prefect"
    home.mkdir()
    (home / "prefect.db").write_text("runs of a user", encoding="utf-8")
    assert not seed_blank_database(home)
    assert (home / "prefect.db").read_text(encoding="utf-8") == "runs of a user"


def test_a_configured_database_or_a_missing_template_leaves_it_to_prefect(template, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PREFECT_SERVER_DATABASE_CONNECTION_URL", "postgresql+asyncpg://127.0.0.1/prefect")
    assert not seed_blank_database(tmp_path / "a")
    monkeypatch.delenv("PREFECT_SERVER_DATABASE_CONNECTION_URL")
    (template / "prefect.db").unlink()
    assert not seed_blank_database(tmp_path / "b")
    assert not (tmp_path / "b" / "prefect.db").exists()


def test_a_server_on_a_seeded_home_answers_with_prefects_block_types(tmp_path, monkeypatch) -> None:
    """The real blank database (./dev makes it at set-up; made here if this venv lacks it)."""
    monkeypatch.delenv("PREFECT_SERVER_DATABASE_CONNECTION_URL", raising=False)
    if not blank_database().is_file():
        make_blank_database()
    server = PrefectServer(tmp_path / "prefect", tmp_path / "api.log")  # seeds the new home
    try:
        server.wait_healthy(timeout=120)
        request = urllib.request.Request(f"{server.api_url}/block_types/filter", data=b"{}", method="POST")
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback URL we built
            block_types = json.load(response)
    finally:
        server.stop()
    # Registered once, at set-up, and carried over in the copy: this first start registered none itself.
    assert {"aws-credentials", "s3-bucket", "secret"} <= {block["slug"] for block in block_types}
    assert "memo_store.toml" not in {p.name for p in (tmp_path / "prefect").iterdir()}
