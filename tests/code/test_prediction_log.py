"""The prediction log shipped to Postgres: every row once, through a cut connection, memory bounded."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from bentos.prediction_log import PredictionLog, PredictionShipper
from core.postgres import transaction
from core.settings import FEATURES
from tasks.drift import PREDICTION_TABLE, read_prediction_log, read_prediction_table
from tests.chaos.proxy import CuttableProxy


def _records(n: int, start: int = 0) -> list[dict]:
    return [
        {
            "model_version": "7",
            "inputs": {f: float(start + i) for f in FEATURES} | {"ph": None},
            "prediction": i % 2,
            "probability": 0.5,
        }
        for i in range(n)
    ]


def _through(proxy: CuttableProxy, url: str) -> str:
    return url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")


def _shipped(url: str) -> list[dict]:
    with transaction(url, "test") as cur:
        cur.execute(f"SELECT record FROM {PREDICTION_TABLE} ORDER BY id")  # noqa: S608
        return [row[0] for row in cur.fetchall()]


@pytest.fixture
def database(postgres_db) -> str:
    return postgres_db()


def test_shipped_rows_read_back_as_the_files_do(database, tmp_path) -> None:
    shipper = PredictionShipper(database, "host-1", every=3600, cap=1000)
    log = PredictionLog(tmp_path, worker=1, shipper=shipper)
    assert log.record("client-a", _records(30)) == 30 and log.record("client-b", _records(5, 100)) == 5
    assert shipper.ship() == 35 and shipper.ship() == 0
    since = datetime.now(UTC) - timedelta(minutes=5)
    from_table, from_files = read_prediction_table(database, since), read_prediction_log(tmp_path, since)
    pd.testing.assert_frame_equal(from_table, from_files, check_like=True)
    assert (
        len(from_table) == 35
        and from_table["ph"].isna().all()
        and set(from_table["client"])
        == {
            "client-a",
            "client-b",
        }
    )
    assert read_prediction_table(database, datetime.now(UTC) + timedelta(minutes=1)).empty  # the window holds


def test_a_cut_connection_loses_nothing_and_duplicates_nothing(database, tmp_path) -> None:
    proxy = CuttableProxy(5432)
    shipper = PredictionShipper(_through(proxy, database), "host-1", every=3600, cap=1000)
    log = PredictionLog(tmp_path, worker=1, shipper=shipper)
    try:
        log.record("c", _records(10))
        assert shipper.ship() == 10  # connected, table made
        proxy.cut()  # the open connection is reset, new ones are refused
        log.record("c", _records(10, 10))
        assert shipper.ship() == 0 and len(shipper.buffer) == 10
        log.record("c", _records(10, 20))  # logged during the outage, after the failed rows
        proxy.restore()
        assert shipper.ship() == 20
    finally:
        proxy.cut()
    solids = [row["inputs"]["Solids"] for row in _shipped(database)]
    assert solids == [float(i) for i in range(30)]  # each row once, in order


def test_a_long_outage_keeps_the_newest_rows_up_to_the_cap(database, tmp_path) -> None:
    proxy = CuttableProxy(5432)
    proxy.cut()
    shipper = PredictionShipper(_through(proxy, database), "host-1", every=3600, cap=8)
    log = PredictionLog(tmp_path, worker=1, shipper=shipper)
    try:
        log.record("c", _records(5))
        assert shipper.ship() == 0
        log.record("c", _records(7, 5))
        assert shipper.dropped == 4 and len(shipper.buffer) == 8
        proxy.restore()
        assert shipper.ship() == 8
    finally:
        proxy.cut()
    assert [row["inputs"]["Solids"] for row in _shipped(database)] == [float(i) for i in range(4, 12)]


def test_the_shipping_thread_ships_on_its_own_and_at_stop(database, tmp_path) -> None:
    shipper = PredictionShipper(database, "host-1", every=0.2, cap=1000).start()
    log = PredictionLog(tmp_path, worker=1, shipper=shipper)
    log.record("c", _records(3))
    deadline = time.monotonic() + 10
    while shipper.shipped < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert shipper.shipped == 3
    shipper.stopped.set()  # the thread stops; what is logged now goes out with stop()
    log.record("c", _records(2, 3))
    shipper.stop()
    assert len(_shipped(database)) == 5
