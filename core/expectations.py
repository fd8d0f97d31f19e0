"""Great Expectations validation of a batch, plain Python: the suite, its run, readable failures.

The suite is built from configs/validation.yaml, so the rules a batch must meet are reviewed as data.
Great Expectations takes ~10 s to import here, so it is imported where it is used, and a CLI run can
start the validation in a worker process while it starts everything else (`start_prevalidation`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from core import configs
from core.batches import Batch, BatchError, check_size, file_sha256, read_batch
from core.data_docs import make_offline
from core.settings import COLUMNS, Settings, get_settings

logger = logging.getLogger(__name__)


@dataclass
class ValidationReport:
    """What a validation found: success, one line per failed expectation, and where the docs are."""

    success: bool
    rows: int
    failures: list[str] = field(default_factory=list)
    evaluated: int = 0
    data_docs: Path | None = None
    labels: str = ""  # the label check's figures (core/labels.py), once GX passed

    def summary(self) -> str:
        if self.success:
            return f"batch valid: {self.rows} rows, {self.evaluated} expectations met"
        return f"batch rejected: {len(self.failures)} failed check(s): " + "; ".join(self.failures)


def build_suite(rules: dict[str, Any]):
    """Translate the YAML rules into a GX ExpectationSuite."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    suite = gx.ExpectationSuite(name=rules["suite_name"])
    suite.add_expectation(gxe.ExpectTableColumnsToMatchSet(column_set=list(COLUMNS), exact_match=True))
    suite.add_expectation(gxe.ExpectTableRowCountToBeBetween(min_value=rules["min_rows"]))
    suite.add_expectation(
        gxe.ExpectCompoundColumnsToBeUnique(column_list=list(COLUMNS), mostly=1.0 - rules["max_duplicate_row_share"])
    )
    label = rules["label"]
    suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=label["column"]))
    suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column=label["column"], value_set=label["values"]))
    for column, bounds in rules["columns"].items():
        suite.add_expectation(gxe.ExpectColumnValuesToBeInTypeList(column=column, type_list=rules["numeric_types"]))
        suite.add_expectation(
            gxe.ExpectColumnValuesToBeBetween(column=column, min_value=bounds["min"], max_value=bounds["max"])
        )
        missing = bounds["max_missing"]
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=column, mostly=1.0 - missing))
    return suite


def describe_failures(results: list, frame: pd.DataFrame, examples: int) -> list[str]:
    """Readable lines for the failed expectations; checks on absent columns fold into one line each."""
    absent = [c for c in COLUMNS if c not in frame.columns]
    lines: list[str] = []
    for result in results:
        if result.success:
            continue
        kwargs = result.expectation_config.kwargs
        involved = [kwargs["column"]] if kwargs.get("column") else list(kwargs.get("column_list") or [])
        if any(column in absent for column in involved):
            continue  # the column-set line already names every absent column
        lines.append(_describe_failure(result, frame, examples))
    return lines


def _describe_failure(result, frame: pd.DataFrame, examples: int) -> str:
    """One line: which expectation, which column, how much was wrong, example offending values."""
    config = result.expectation_config
    kwargs = config.kwargs
    column = kwargs.get("column")
    name = config.type
    subject = f"{name} [{column}]" if column else name
    info = result.exception_info or {}
    if info.get("raised_exception"):
        return f"{subject}: could not be evaluated ({str(info.get('exception_message'))[:160]})"
    res = result.result or {}
    if name == "expect_table_columns_to_match_set":
        observed = set(res.get("observed_value") or frame.columns)
        missing = sorted(set(COLUMNS) - observed)
        extra = sorted(observed - set(COLUMNS))
        return f"{subject}: missing columns {missing}, unexpected columns {extra}"
    if name == "expect_table_row_count_to_be_between":
        return f"{subject}: {res.get('observed_value')} rows, need at least {kwargs.get('min_value')}"
    if name == "expect_column_values_to_be_in_type_list":
        return f"{subject}: column type is {res.get('observed_value')}, expected numbers" + _non_numeric(
            frame, column, examples
        )
    if res.get("unexpected_count") is None:
        return f"{subject}: could not be evaluated (column {column!r} is not numeric)"
    count = f"{res['unexpected_count']} of {res.get('element_count')}"
    percent = res.get("unexpected_percent") or 0.0
    allowed = 1.0 - (kwargs.get("mostly") or 1.0)
    if name == "expect_column_values_to_not_be_null":
        return f"{subject}: {count} values missing ({percent:.1f}%, at most {allowed:.0%} allowed)"
    if name == "expect_compound_columns_to_be_unique":
        return (
            f"{subject}: {res['unexpected_count']} rows are duplicated ({percent:.2f}%, at most {allowed:.0%} allowed)"
        )
    detail = f"{count} values ({percent:.1f}%)"
    if name == "expect_column_values_to_be_between":
        detail += f" outside [{kwargs.get('min_value')}, {kwargs.get('max_value')}]"
    elif name == "expect_column_values_to_be_in_set":
        detail += f" not in {kwargs.get('value_set')}"
    values = (res.get("partial_unexpected_list") or [])[:examples]
    if values:
        detail += "; e.g. " + ", ".join(repr(v) for v in values)
    return f"{subject}: {detail}"


def _non_numeric(frame: pd.DataFrame, column: str, examples: int) -> str:
    values = frame[column].dropna()
    bad = values[pd.to_numeric(values, errors="coerce").isna()].unique()[:examples]
    return f"; non-numeric values e.g. {', '.join(repr(v) for v in bad)}" if len(bad) else ""


def run_expectations(frame: pd.DataFrame, rules: dict[str, Any], docs_dir: Path) -> ValidationReport:
    """Validate a DataFrame with GX (ephemeral context) and write Data Docs HTML to docs_dir."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # keep the CLI output readable
    context.add_data_docs_site(
        "potable",
        {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    asset = context.data_sources.add_pandas("landing").add_dataframe_asset("water_batch")
    batch_definition = asset.add_batch_definition_whole_dataframe("whole_batch")
    suite = context.suites.add(build_suite(rules))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="water_batch_validation", data=batch_definition, suite=suite)
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name="water_batch_checkpoint",
            validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="update_data_docs")],
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": rules["example_values"]},
        )
    )
    outcome = checkpoint.run(batch_parameters={"dataframe": frame})
    make_offline(docs_dir)
    results = [r for run in outcome.run_results.values() for r in run.results]
    failures = describe_failures(results, frame, rules["example_values"])
    return ValidationReport(
        success=bool(outcome.success),
        rows=len(frame),
        failures=failures,
        evaluated=len(results),
        data_docs=docs_dir / "index.html",
    )


def validate_batch(batch: Batch, settings: Settings) -> ValidationReport:
    """Parse and validate a fetched batch; unparseable files become a failed report, not a traceback.

    A result from a worker started for the same bytes under the same rules is used instead.
    """
    prevalidated = _collect_prevalidation(batch, settings)
    if prevalidated is not None:
        return prevalidated
    rules = configs.validation(settings).rules()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    docs_dir = settings.reports_dir / "data_docs" / f"{stamp}-{batch.sha256[:12]}"
    try:
        check_size(batch.path, rules["max_bytes"], rules["max_rows"])
    except BatchError as exc:
        return ValidationReport(success=False, rows=0, failures=[f"batch too large: {exc}"])
    try:
        frame = read_batch(batch.path)
    except BatchError as exc:
        return ValidationReport(success=False, rows=0, failures=[f"unreadable batch: {exc}"])
    return run_expectations(frame, rules, docs_dir)


def rules_fingerprint(settings: Settings) -> str:
    """Identifies the rules a report was produced under (a report is only reused under the same rules)."""
    rules = configs.validation(settings).rules()
    return hashlib.sha256(json.dumps(rules, sort_keys=True, default=str).encode()).hexdigest()


# Validations started in a worker process, by (batch sha256, rules fingerprint). In-process memory only:
# nothing a flow parameter or a file could forge.
_started: dict[tuple[str, str], Future] = {}


def _validate_in_worker(path: str) -> ValidationReport:
    settings = get_settings()
    return validate_batch(Batch(uri=path, path=Path(path), sha256=file_sha256(Path(path))), settings)


def start_prevalidation(uri: str, settings: Settings) -> bool:
    """Start validating a local batch in a worker process now; `validate_batch` collects the result.

    Lets the ~10 s Great Expectations import and the validation run on the other core while the CLI
    imports the ML stack and starts Prefect. S3 objects are validated in the flow as usual.
    """
    path = Path(uri.removeprefix("file://")).expanduser()
    if uri.startswith("s3://") or not path.is_file():
        return False
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    _started[(file_sha256(path), rules_fingerprint(settings))] = pool.submit(_validate_in_worker, str(path))
    pool.shutdown(wait=False)
    return True


def _collect_prevalidation(batch: Batch, settings: Settings) -> ValidationReport | None:
    future = _started.pop((batch.sha256, rules_fingerprint(settings)), None)
    if future is None:
        return None
    try:
        return future.result(timeout=600)
    except Exception as exc:  # noqa: BLE001 - the worker is an optimisation; validate here instead
        logger.warning("validation worker failed (%s); validating in this process", exc)
        return None
