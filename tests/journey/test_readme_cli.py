"""README "Set-up" → "Governance" → "Release", command by command, each its own process."""

from __future__ import annotations

import json

import pytest

from tests.journey.conftest import User, readable_failure, release_config, router_version, user_environment

pytestmark = pytest.mark.journey


def test_train_promote_release_predict_retrain_release_rollback(fresh_home, tmp_path) -> None:
    config = release_config(tmp_path)
    user = User(user_environment(POTABLE_HOME=str(fresh_home), POTABLE_RELEASE_CONFIG=str(config)))
    try:
        first = user.json("train", "--trials", "2")
        assert first["gate_passed"] and first["bento_tag"], first
        v1 = first["model_version"]
        assert user.json("potable", "promote", "--version", v1, POTABLE_AUTO_APPROVE="1")["champion"] == v1
        released = user.json("potable", "release")
        assert released["status"] == "released" and released["version"] == v1
        assert router_version(config) == v1

        second = user.json("train", "--trials", "2")
        v2 = second["model_version"]
        assert user.json("potable", "promote", "--version", v2, POTABLE_AUTO_APPROVE="1")["champion"] == v2
        assert user.json("potable", "release")["version"] == v2
        assert router_version(config) == v2

        user.run("potable", "rollback")  # after the window: the version live before comes back
        assert router_version(config) == v1
        intervals = json.loads(user.run("potable", "rollout", "history", "--json").stdout)
        assert [i["version"] for i in intervals] == [v1, v2, v1] and intervals[-1]["to"] is None
        assert "intact" in user.run("potable", "audit", "verify").stdout

        # What a user can get wrong reads as one line, not a traceback.
        readable_failure(
            user.run("potable", "release", "--version", "99", "--override-reason", "x", expect=1), "v99 does not exist"
        )
        readable_failure(user.run("potable", "release", "--version", v1, expect=1), "not the approved champion")
        readable_failure(user.run("potable", "promote", "--version", v1, expect=1), "already decided")
        readable_failure(
            user.run("potable", "approve", "--version", v2, "--approver", "me", expect=1), "no Prefect API"
        )
    finally:
        user.run("potable", "rollout", "stop")
