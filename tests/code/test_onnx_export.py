"""The ONNX form of every model family answers like its sklearn Pipeline, or is refused."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler
from test_tuning import FAMILIES  # same small, fast configurations as the tuning tests

from core.settings import FEATURES
from tasks.onnx_export import BackgroundExport, OnnxExportError, export_checked, positive_probability, session
from tasks.tuning import build_pipeline


@pytest.fixture(scope="module")
def rows(reference_frame):
    """Every row of the bundled data, missing values included (the imputation is part of the graph)."""
    return reference_frame[list(FEATURES)]


@pytest.fixture(scope="module")
def labels(reference_frame):
    return reference_frame["Potability"]


# skl2onnx 1.20 cannot convert scikit-learn 1.9's HistGradientBoosting (it writes booleans into an int
# attribute): packaging serves such a version with sklearn instead. Revisit when either is upgraded.
NO_ONNX = {"hist_gradient_boosting"}


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - NO_ONNX))
@pytest.mark.parametrize("imputer", ["median", "mean"])
def test_each_family_matches_sklearn_on_every_row(family, imputer, rows, labels) -> None:
    pipeline = build_pipeline(family, FAMILIES[family], seed=0, imputer=imputer).fit(rows, labels)
    export = export_checked(pipeline, rows)
    assert export.rows_checked == len(rows) and export.max_abs_diff <= 1e-5
    # The stored graph is what a server loads: check it independently of export_checked.
    got = positive_probability(session(export.model.SerializeToString()), rows.to_numpy())
    np.testing.assert_allclose(got, pipeline.predict_proba(rows)[:, 1], atol=1e-5)


@pytest.mark.parametrize("family", sorted(NO_ONNX))
def test_a_family_skl2onnx_cannot_convert_is_refused(family, rows, labels) -> None:
    pipeline = build_pipeline(family, FAMILIES[family], seed=0).fit(rows, labels)
    with pytest.raises(OnnxExportError, match="skl2onnx cannot convert"):
        export_checked(pipeline, rows)


def test_a_step_without_an_onnx_front_is_refused(rows, labels) -> None:
    pipeline = Pipeline([("impute", SimpleImputer()), ("minmax", MinMaxScaler()), ("model", LogisticRegression())]).fit(
        rows, labels
    )
    with pytest.raises(OnnxExportError, match="minmax"):
        export_checked(pipeline, rows)


def test_answers_beyond_the_tolerance_are_refused(rows, labels) -> None:
    pipeline = build_pipeline("extra_trees", FAMILIES["extra_trees"], seed=0).fit(rows, labels)
    with pytest.raises(OnnxExportError, match="differ from sklearn"):
        export_checked(pipeline, rows, tolerance=-1.0)


def test_the_background_export_is_the_same_checked_export(rows, labels) -> None:
    """The train flow converts in a spawned process while it evaluates: same graph answers, same check."""
    pipeline = build_pipeline("extra_trees", FAMILIES["extra_trees"], seed=0).fit(rows, labels)
    export = BackgroundExport().convert(pipeline, rows).result(timeout=300)
    assert export.rows_checked == len(rows) and export.max_abs_diff <= 1e-5
    got = positive_probability(session(export.model), rows.to_numpy(dtype=np.float64))
    assert np.max(np.abs(got - pipeline.predict_proba(rows)[:, 1])) <= 1e-5


def test_a_refusal_in_the_background_comes_back_as_the_same_error(rows, labels) -> None:
    pipeline = Pipeline([("impute", SimpleImputer()), ("minmax", MinMaxScaler()), ("model", LogisticRegression())]).fit(
        rows, labels
    )
    with pytest.raises(OnnxExportError, match="minmax"):
        BackgroundExport().convert(pipeline, rows).result(timeout=300)


def test_a_killed_export_process_is_a_clear_error_not_a_hang(rows, labels) -> None:
    """A real fault: SIGKILL to the converting process. Packaging then serves with sklearn (tested in e2e)."""
    pipeline = build_pipeline("extra_trees", FAMILIES["extra_trees"], seed=0).fit(rows, labels)
    started = BackgroundExport().convert(pipeline, rows)
    os.kill(started._process.pid, signal.SIGKILL)
    began = time.monotonic()
    with pytest.raises(OnnxExportError, match="died"):
        started.result(timeout=300)
    assert time.monotonic() - began < 30


def test_discarding_stops_a_running_export(rows, labels) -> None:
    pipeline = build_pipeline("extra_trees", FAMILIES["extra_trees"], seed=0).fit(rows, labels)
    started = BackgroundExport().convert(pipeline, rows)
    started.discard()
    started.discard()  # idempotent: the flow discards again after packaging collected it
    assert not started._process.is_alive()


def test_an_export_never_given_a_model_is_stopped_by_discard() -> None:
    """The flow starts the export process before tuning; a run that fails there discards it unused."""
    started = BackgroundExport()
    assert started._process.is_alive()  # waiting for the model
    started.discard()
    assert not started._process.is_alive()
