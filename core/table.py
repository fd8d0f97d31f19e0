"""The training table: every accepted batch, as one Delta Lake table with a version per commit.

Why Delta Lake (deltalake, delta-rs) and not a manifest of CSV files or Iceberg: the table is a folder
(local under POTABLE_HOME, or an S3 prefix) whose transaction log *is* the catalogue — no catalogue
service to run beside it — with time travel by version, custom commit metadata kept in `history()`, and
a commit protocol that makes concurrent writers safe (atomic rename locally, conditional PUT on S3):
two workers appending at once get two commits, or one retries. See docs/data.md.

Each row carries:
- `row_id`: a 64-bit hash of its nine measurements at the table's measurement precision (`decimals`, fixed
  when the table is made), so a re-export of the same lab results with other rounding is the same row;
- `split`: `train` or `evaluation`, decided once from `row_id` (a fixed share): no version ever fits on
  an evaluation row, whichever batch it arrived in, and champion and challenger are judged on them;
- `row_check`: a hash of row_id, label and split, so a file edited outside the platform is noticed;
- `batch_sha256`: the batch it arrived in.
Plain Python over deltalake and pandas: no Prefect, so the CLI and tests use it directly.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from core.settings import FEATURES, LABEL, Settings

SPLITS = ("train", "evaluation")
_MISSING = np.iinfo(np.int64).min  # a missing measurement's place in the row hash
COMMIT_KEYS = ("batch_sha256", "source", "arrived_at", "batch_rows", "rows_added", "duplicates", "conflicts")


class TableError(Exception):
    """The table cannot give what was asked; the message names the version or the column."""


class TableVersionMissing(TableError):
    pass


class TableDamaged(TableError):
    """Files of a version were deleted or edited outside the platform."""


@dataclass(frozen=True)
class Appended:
    """What one batch did to the table."""

    version: int  # the version holding the batch's rows (unchanged when nothing was new)
    batch_rows: int
    rows_added: int
    duplicates: int  # rows already in the table (at measurement precision), not added again
    conflicts: int  # of those, rows whose label in the table differs
    committed: bool


@dataclass(frozen=True)
class TableVersion:
    """The rows of one version (after the history window), verified against their own hashes."""

    uri: str
    version: int
    frame: pd.DataFrame
    digest: str  # sha256 over the version's row checks, in row-id order: equal content, equal digest
    total_rows: int  # before the history window

    @property
    def train(self) -> pd.DataFrame:
        return self.frame[self.frame["split"] == "train"]

    @property
    def evaluation(self) -> pd.DataFrame:
        return self.frame[self.frame["split"] == "evaluation"]


@dataclass(frozen=True)
class Commit:
    version: int
    time: str
    operation: str
    batch_sha256: str | None
    source: str | None
    rows_added: int
    rows_total: int
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "time": self.time,
            "batch_sha256": self.batch_sha256,
            "source": self.source,
            "rows_added": self.rows_added,
            "rows_total": self.rows_total,
            **{k: v for k, v in self.details.items() if k not in ("batch_sha256", "source")},
        }


def quantize(frame: pd.DataFrame, decimals: dict[str, int]) -> np.ndarray:
    """The measurements as integers at their precision (ph 7.0012 at 2 decimals -> 700): equal results
    rounded differently become equal integers; a missing value gets its own marker."""
    columns = []
    for name in FEATURES:
        values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype="float64")
        scaled = np.round(values * 10.0 ** decimals[name])
        missing = ~np.isfinite(scaled)
        columns.append(np.where(missing, _MISSING, np.where(missing, 0.0, scaled).astype("int64")))
    return np.ascontiguousarray(np.column_stack(columns).astype("<i8"))


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser over a uint64 array: plain integer arithmetic, the same on every machine
    and library version (a hash that changed with an upgrade would break deduplication)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _combine(columns: list[np.ndarray], seed: int) -> np.ndarray:
    h = np.full(len(columns[0]), np.uint64(seed), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in columns:
            h = _mix(h ^ _mix(column.astype(np.int64).view(np.uint64) + _GOLDEN))
    return h


def row_ids(frame: pd.DataFrame, decimals: dict[str, int]) -> np.ndarray:
    """One 64-bit id per row from its quantized measurements (vectorised: a million rows in ~0.1 s).
    Two different lab results share an id with probability ~n²/2⁶⁵ (3e-8 at a million rows)."""
    matrix = quantize(frame, decimals)
    return _combine([matrix[:, i] for i in range(matrix.shape[1])], 1).view(np.int64)


def split_of(ids: np.ndarray, evaluation_share: float) -> np.ndarray:
    """`evaluation` for a fixed share of ids, from the id alone: the same row lands on the same side always."""
    fraction = (_mix(np.asarray(ids, dtype=np.int64).view(np.uint64)) >> np.uint64(11)).astype("float64") / 2.0**53
    return np.where(fraction < evaluation_share, "evaluation", "train").astype(object)


def row_checks(ids: np.ndarray, labels: np.ndarray, splits: np.ndarray) -> np.ndarray:
    """A hash of id, label and split: a label or side changed by hand no longer matches it."""
    side = (np.asarray(splits) == "evaluation").astype(np.int64)
    return _combine([np.asarray(ids, dtype=np.int64), np.asarray(labels, dtype=np.int64), side], 2).view(np.int64)


def content_digest(frame: pd.DataFrame) -> str:
    """sha256 of the version's row checks in id order: the same rows give the same digest, however they came."""
    order = np.argsort(frame["row_id"].to_numpy(), kind="stable")
    return hashlib.sha256(np.ascontiguousarray(frame["row_check"].to_numpy(np.int64)[order]).tobytes()).hexdigest()


class TrainingTable:
    """One Delta table at `uri` (a folder or s3://bucket/prefix)."""

    def __init__(
        self,
        uri: str,
        decimals: dict[str, int],
        evaluation_share: float,
        storage_options: dict[str, str] | None = None,
    ):
        self.uri = uri
        self.decimals = dict(decimals)
        self.evaluation_share = evaluation_share
        self.storage_options = storage_options or None

    # ---- reading the log ---------------------------------------------------------------------------
    def _open(self, version: int | None = None):
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            table = DeltaTable(self.uri, storage_options=self.storage_options)
        except TableNotFoundError:
            raise TableVersionMissing(f"no training table at {self.uri} yet") from None
        if version is not None:
            latest = table.version()
            if not 0 <= version <= latest:
                raise TableVersionMissing(
                    f"table {self.uri} has no version {version}: versions are 0..{latest} (`potable data log`)"
                )
            try:
                table.load_as_version(version)
            except Exception as exc:  # delta-rs: a version whose log entry is gone
                raise TableDamaged(f"table version {version} cannot be loaded: {exc}") from exc
        return table

    def exists(self) -> bool:
        try:
            self._open()
        except TableVersionMissing:
            return False
        return True

    def latest_version(self) -> int:
        return self._open().version()

    def table_settings(self) -> dict[str, Any]:
        """The measurement precision and evaluation share fixed when the table was made (version 0)."""
        first = [c for c in self._history() if int(c["version"]) == 0]
        if first and "table_settings" in first[0]:
            return json.loads(first[0]["table_settings"])
        return {"decimals": self.decimals, "evaluation_share": self.evaluation_share}

    def _history(self) -> list[dict[str, Any]]:
        return sorted(self._open().history(), key=lambda c: int(c["version"]))

    def log(self) -> list[Commit]:
        commits, total = [], 0
        for entry in self._history():
            metrics = entry.get("operationMetrics") or {}
            added = int(entry.get("rows_added") or metrics.get("num_target_rows_inserted") or 0)
            total += added
            stamp = datetime.fromtimestamp(int(entry.get("timestamp", 0)) / 1000, UTC).isoformat(timespec="seconds")
            details = {k: _number(entry[k]) for k in COMMIT_KEYS if k in entry}
            commits.append(
                Commit(
                    int(entry["version"]),
                    stamp,
                    str(entry.get("operation", "")),
                    entry.get("batch_sha256"),
                    entry.get("source"),
                    added,
                    total,
                    details,
                )
            )
        return commits

    # ---- writing -----------------------------------------------------------------------------------
    def rows_for(self, frame: pd.DataFrame, batch_sha256: str) -> pd.DataFrame:
        """A batch's rows in the table's shape (ids, split, checks), duplicates within the batch dropped."""
        settings = self.table_settings() if self.exists() else {"decimals": self.decimals}
        decimals = settings["decimals"]
        share = settings.get("evaluation_share", self.evaluation_share)
        rows = frame.loc[:, list(FEATURES)].apply(pd.to_numeric, errors="coerce").astype("float64")
        rows[LABEL] = pd.to_numeric(frame[LABEL]).astype("int64")
        rows.insert(0, "row_id", row_ids(rows, decimals))
        rows = rows.drop_duplicates("row_id", keep="first").reset_index(drop=True)
        rows["split"] = split_of(rows["row_id"].to_numpy(), share)
        rows["row_check"] = row_checks(rows["row_id"].to_numpy(), rows[LABEL].to_numpy(), rows["split"].to_numpy())
        rows["batch_sha256"] = batch_sha256
        return rows

    def known_labels(self) -> pd.Series:
        """Label per row id at the latest version (empty for a new table)."""
        if not self.exists():
            return pd.Series(dtype="int64")
        frame = self._open().to_pandas(columns=["row_id", LABEL])
        return frame.set_index("row_id")[LABEL]

    def append(
        self, frame: pd.DataFrame, batch_sha256: str, source: str, arrived_at: str | None = None, attempts: int = 20
    ) -> Appended:
        """Add the batch's new rows as one commit carrying where they came from. Rows already in the table
        (at measurement precision) are not added twice. A concurrent writer's commit makes ours retry
        against the new version (the format's conflict check), so no row is lost or doubled."""
        import pyarrow as pa
        from deltalake import CommitProperties, write_deltalake
        from deltalake.exceptions import CommitFailedError

        arrived_at = arrived_at or datetime.now(UTC).isoformat(timespec="seconds")
        meta = {"batch_sha256": batch_sha256, "source": source[:500], "arrived_at": arrived_at}
        for attempt in range(attempts):
            rows = self.rows_for(frame, batch_sha256)
            known = self.known_labels()
            seen = rows["row_id"].isin(known.index)
            conflicts = int((known.reindex(rows.loc[seen, "row_id"]).to_numpy() != rows.loc[seen, LABEL]).sum())
            details = {
                **meta,
                "batch_rows": str(len(frame)),
                "duplicates": str(int(seen.sum()) + len(frame) - len(rows)),
                "conflicts": str(conflicts),
            }
            fresh = rows.loc[~seen]
            try:
                if not self.exists():
                    settings = {"decimals": self.decimals, "evaluation_share": self.evaluation_share}
                    details["table_settings"] = json.dumps(settings, sort_keys=True)
                    details["rows_added"] = str(len(fresh))
                    write_deltalake(
                        self.uri,
                        pa.Table.from_pandas(fresh, preserve_index=False),
                        mode="error",
                        storage_options=self.storage_options,
                        commit_properties=CommitProperties(custom_metadata=details),
                    )
                    return Appended(0, len(frame), len(fresh), int(details["duplicates"]), conflicts, True)
                table = self._open()
                if fresh.empty:
                    return Appended(table.version(), len(frame), 0, int(details["duplicates"]), conflicts, False)
                details["rows_added"] = str(len(fresh))
                result = (
                    table.merge(
                        pa.Table.from_pandas(fresh, preserve_index=False),
                        predicate="t.row_id = s.row_id",
                        source_alias="s",
                        target_alias="t",
                        commit_properties=CommitProperties(custom_metadata=details),
                    )
                    .when_not_matched_insert_all()
                    .execute()
                )
                inserted = int(result.get("num_target_rows_inserted", len(fresh)))
                return Appended(table.version(), len(frame), inserted, int(details["duplicates"]), conflicts, True)
            except (CommitFailedError, FileExistsError) as exc:
                if attempt == attempts - 1:
                    raise TableError(f"could not commit to {self.uri} after {attempts} attempts: {exc}") from exc
                time.sleep(0.05 * (attempt + 1))
            except Exception:
                if "table_settings" in details and self.exists():
                    continue  # another writer created the table between our look and our write: append to it
                raise
        raise TableError(f"could not commit to {self.uri}")

    # ---- reading rows ------------------------------------------------------------------------------
    def read(self, version: int | None = None, last_versions: int | None = None, last_days: float | None = None):
        """Rows of `version` (default latest), verified, optionally only the batches of the last N versions
        or days (the history window of configs/training.yaml)."""
        table = self._open(version)
        at = table.version()
        try:
            frame = table.to_pandas()
        except Exception as exc:  # a data file deleted or unreadable
            raise TableDamaged(f"table version {at} at {self.uri} cannot be read: {exc}") from exc
        self._verify(frame, at)
        total = len(frame)
        keep = self._window(at, last_versions, last_days)
        if keep is not None:
            frame = frame[frame["batch_sha256"].isin(keep)]
        frame = frame.sort_values("row_id", kind="stable").reset_index(drop=True)
        return TableVersion(self.uri, at, frame, content_digest(frame), total)

    def _verify(self, frame: pd.DataFrame, version: int) -> None:
        decimals = self.table_settings()["decimals"]
        ids = row_ids(frame, decimals)
        checks = row_checks(frame["row_id"].to_numpy(), frame[LABEL].to_numpy(), frame["split"].to_numpy())
        bad = (ids != frame["row_id"].to_numpy()) | (checks != frame["row_check"].to_numpy())
        expected = sum(c.rows_added for c in self.log() if c.version <= version)
        if bad.any():
            raise TableDamaged(
                f"table version {version} at {self.uri}: {int(bad.sum())} rows do not match their hashes "
                "(files edited outside the platform); nothing is trained on it"
            )
        if len(frame) != expected:
            raise TableDamaged(
                f"table version {version} at {self.uri} holds {len(frame)} rows where its log says {expected} "
                "(files changed outside the platform); nothing is trained on it"
            )

    def _window(self, version: int, last_versions: int | None, last_days: float | None) -> set[str] | None:
        if last_versions is None and last_days is None:
            return None
        commits = [c for c in self.log() if c.version <= version and c.batch_sha256]
        if last_versions is not None:
            commits = commits[-last_versions:]
        if last_days is not None:
            since = datetime.now(UTC) - timedelta(days=last_days)
            commits = [c for c in commits if datetime.fromisoformat(c.time) >= since]
        return {c.batch_sha256 for c in commits}

    def show(self, version: int | None = None) -> dict[str, Any]:
        """Counts per label and per batch (with each batch's source and evaluation share) at a version."""
        rows = self.read(version)
        sources = {c.batch_sha256: c for c in self.log() if c.batch_sha256}
        per_batch = []
        for sha, part in rows.frame.groupby("batch_sha256", sort=False):
            commit = sources.get(sha)
            per_batch.append(
                {
                    "batch_sha256": sha,
                    "version": commit.version if commit else None,
                    "source": commit.source if commit else None,
                    "rows": len(part),
                    "potable": int(part[LABEL].sum()),
                    "not_potable": int((part[LABEL] == 0).sum()),
                    "evaluation_rows": int((part["split"] == "evaluation").sum()),
                }
            )
        per_batch.sort(key=lambda b: (b["version"] is None, b["version"]))
        return {
            "version": rows.version,
            "rows": len(rows.frame),
            "labels": {str(k): int(v) for k, v in rows.frame[LABEL].value_counts().sort_index().items()},
            "splits": {k: int(v) for k, v in rows.frame["split"].value_counts().sort_index().items()},
            "digest": rows.digest,
            "batches": per_batch,
        }

    def diff(self, a: int, b: int) -> dict[str, Any]:
        """Rows in one version and not the other, and the batches that brought them."""
        left, right = self.read(a).frame, self.read(b).frame
        added = right[~right["row_id"].isin(left["row_id"])]
        removed = left[~left["row_id"].isin(right["row_id"])]
        return {
            "from": a,
            "to": b,
            "rows_added": len(added),
            "rows_removed": len(removed),
            "labels_added": {str(k): int(v) for k, v in added[LABEL].value_counts().sort_index().items()},
            "batches_added": sorted(set(added["batch_sha256"])),
        }


def storage_options(settings: Settings) -> dict[str, str] | None:
    """delta-rs options for an s3:// table: the same endpoint setting as every other S3 client here
    (moto in tests, AWS in production), and conditional PUTs so concurrent commits cannot overwrite."""
    if not settings.table.startswith("s3://"):
        return None
    options = {"AWS_REGION": settings.aws_region, "conditional_put": "etag"}
    if settings.s3_endpoint_url:
        options["AWS_ENDPOINT_URL"] = settings.s3_endpoint_url
        if settings.s3_endpoint_url.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    return options


def training_table(settings: Settings) -> TrainingTable:
    """The platform's table: POTABLE_TABLE_URI (default <home>/table), precision from validation.yaml,
    the evaluation share from training.yaml (both fixed for a table when its first version is written)."""
    from core import configs

    validation = configs.validation(settings)
    data = configs.training(settings).data
    decimals = {name: bounds.decimals for name, bounds in validation.columns.items() if name in FEATURES}
    return TrainingTable(settings.table, decimals, data.evaluation_share, storage_options(settings))


def _number(value: Any) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        return value
