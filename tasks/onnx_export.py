"""The served model as an ONNX graph, accepted only when it answers like the sklearn Pipeline it came from.

Why: one row through the soft-vote Pipeline costs ~90 ms in sklearn (per-tree Python overhead) and
~0.06 ms in ONNX Runtime, which is what lets one small server take many concurrent single-sample calls.

Why a hand-built front: the fitted imputation and scaling are computed in float64 (as sklearn does) and
only then cast to float32, because sklearn's trees cast their input to float32 themselves. skl2onnx's
float32 imputer/scaler round differently, which flips splits near a threshold (seen: 4e-4 on
probabilities); ONNX Runtime has no float64 imputer kernel. The final estimator goes through skl2onnx.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

PARITY_TOLERANCE = 1e-5
OPSET = {"": 18, "ai.onnx.ml": 3}


class OnnxExportError(Exception):
    """The Pipeline cannot be served through ONNX (unsupported step, or answers differ beyond tolerance)."""


@dataclass(frozen=True)
class OnnxExport:
    model: object  # onnx.ModelProto
    max_abs_diff: float
    rows_checked: int


def _front_graph(steps: list, n_features: int):
    """float64 input → the fitted imputation/scaling in float64 → float32 'features' for the estimator."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, current = [], [], "X"
    for i, (name, step) in enumerate(steps):
        if isinstance(step, SimpleImputer) and not step.add_indicator:
            fill = numpy_helper.from_array(step.statistics_.astype(np.float64), f"fill_{i}")
            inits.append(fill)
            nodes += [
                helper.make_node("IsNaN", [current], [f"missing_{i}"]),
                helper.make_node("Where", [f"missing_{i}", fill.name, current], [f"imputed_{i}"]),
            ]
            current = f"imputed_{i}"
        elif isinstance(step, StandardScaler):
            mean = step.mean_ if step.with_mean else np.zeros(n_features)
            scale = step.scale_ if step.with_std else np.ones(n_features)
            inits += [numpy_helper.from_array(mean.astype(np.float64), f"mean_{i}")]
            inits += [numpy_helper.from_array(scale.astype(np.float64), f"scale_{i}")]
            nodes += [
                helper.make_node("Sub", [current, f"mean_{i}"], [f"centred_{i}"]),
                helper.make_node("Div", [f"centred_{i}", f"scale_{i}"], [f"scaled_{i}"]),
            ]
            current = f"scaled_{i}"
        else:
            raise OnnxExportError(f"pipeline step {name!r} ({type(step).__name__}) has no ONNX front")
    nodes.append(helper.make_node("Cast", [current], ["features"], to=TensorProto.FLOAT))
    graph = helper.make_graph(
        nodes,
        "front",
        [helper.make_tensor_value_info("X", TensorProto.DOUBLE, [None, n_features])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, n_features])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET[""])])


def to_onnx_model(pipeline: Pipeline, n_features: int):
    """Front (float64) + skl2onnx final estimator (float32 in, probabilities out) as one graph."""
    from onnx import compose
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    estimator = pipeline.steps[-1][1]
    if "flatten_transform" in estimator.get_params(deep=False):
        # Only transform() flattens; predict_proba is the same either way and skl2onnx needs it off.
        estimator = copy.copy(estimator)  # shallow: shares the fitted members, leaves the served model alone
        estimator.flatten_transform = False
    try:
        back = to_onnx(
            estimator,
            initial_types=[("features", FloatTensorType([None, n_features]))],
            options={"zipmap": False},
            target_opset=OPSET,
        )
    except Exception as exc:  # skl2onnx raises many types for unsupported models
        raise OnnxExportError(f"skl2onnx cannot convert {type(estimator).__name__}: {exc}") from exc
    front = _front_graph(pipeline.steps[:-1], n_features)
    front.ir_version = back.ir_version
    front = compose.add_prefix(front, "front_", rename_inputs=False, rename_outputs=False)
    return compose.merge_models(front, back, io_map=[("features", "features")])


def session(model, threads: int = 1):
    """An ONNX Runtime session pinned to `threads` (a server runs one per worker process)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = threads
    options.log_severity_level = 3  # skl2onnx leaves an unused initializer; ORT warns about it on every load
    # As the service runs it, so parity is checked on the session that serves. Graph rewrites find nothing
    # to fuse in a tree ensemble; skipping them cuts a 14 MB forest's load by a third, no call slower.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    payload = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])


def positive_probability(sess, X: np.ndarray) -> np.ndarray:
    """P(potable) for float64 rows in the Pipeline's feature order."""
    outputs = sess.run(None, {"X": np.ascontiguousarray(X, dtype=np.float64)})
    return np.asarray(outputs[-1], dtype=np.float64)[:, 1]


def export_checked(pipeline: Pipeline, X: pd.DataFrame, tolerance: float = PARITY_TOLERANCE) -> OnnxExport:
    """Convert, then compare P(potable) with the Pipeline on every row of X; refuse beyond `tolerance`."""
    model = to_onnx_model(pipeline, X.shape[1])
    expected = pipeline.predict_proba(X)[:, 1]
    got = positive_probability(session(model), X.to_numpy(dtype=np.float64))
    diff = float(np.max(np.abs(got - expected)))
    if not diff <= tolerance:
        raise OnnxExportError(f"ONNX answers differ from sklearn by {diff:.2e} (> {tolerance:.0e}) on {len(X)} rows")
    return OnnxExport(model, diff, len(X))


def _export_in_child(conn) -> None:
    try:
        # Imported while the flow still tunes: once the model arrives only the conversion is left.
        import onnxruntime  # noqa: F401
        import skl2onnx  # noqa: F401
        from onnx import compose  # noqa: F401

        pipeline, X = conn.recv()
        export = export_checked(pipeline, X)
        conn.send(("ok", export.model.SerializeToString(), export.max_abs_diff, export.rows_checked))
    except OnnxExportError as exc:
        conn.send(("refused", str(exc), 0.0, 0))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which falls back to sklearn
        conn.send(("refused", f"ONNX export failed: {type(exc).__name__}: {exc}", 0.0, 0))
    finally:
        conn.close()


class BackgroundExport:
    """`export_checked` in a spawned process, started before the model exists and given it once fitted.

    Why: skl2onnx walks every tree node in Python (~7 s for the default 300-tree model, one core), yet
    nothing before packaging needs the result, so it runs on the other core while the flow evaluates,
    registers and governs. The process starts (Python, sklearn, skl2onnx, ONNX Runtime: ~3 s) while the
    flow tunes, so only the conversion is left when the model arrives. The parity check is the same one,
    on the same rows; a version that fails the gate discards it unused.
    """

    def __init__(self):
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # fork would copy the flow's threads and locks
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(target=_export_in_child, args=(child_conn,), name="onnx-export", daemon=True)
        self._process.start()
        child_conn.close()
        self._sender: threading.Thread | None = None

    def convert(self, pipeline: Pipeline, X: pd.DataFrame) -> BackgroundExport:
        """Hand the fitted model and its parity rows over; returns at once (result() collects)."""
        # From a thread: a pipe holds 64 KB, so the write lasts until the child has read the whole model.
        self._sender = threading.Thread(target=self._send, args=(pipeline, X), name="onnx-export-send", daemon=True)
        self._sender.start()
        return self

    def _send(self, pipeline: Pipeline, X: pd.DataFrame) -> None:
        try:
            self._conn.send((pipeline, X))
        except OSError:  # the child died or was discarded: result() says so
            pass

    def result(self, timeout: float = 900.0) -> OnnxExport:
        """The checked export; OnnxExportError when it was refused, the child died or took too long."""
        import onnx

        try:
            if not self._conn.poll(timeout):
                raise OnnxExportError(f"ONNX export did not finish within {timeout:.0f} s")
            status, payload, diff, rows = self._conn.recv()
        except (EOFError, ConnectionResetError) as exc:  # which one depends on where the child was killed
            raise OnnxExportError(f"the ONNX export process died (exit code {self._process.exitcode})") from exc
        finally:
            self.discard()
        if status != "ok":
            raise OnnxExportError(payload)
        return OnnxExport(onnx.load_from_string(payload), diff, rows)

    def discard(self) -> None:
        """Stop the child if it still runs (a version that failed the gate is never packaged)."""
        if self._process.is_alive():
            self._process.terminate()
        self._process.join(timeout=10)
        if self._sender is not None:
            self._sender.join(timeout=10)  # its write fails once the child is gone
        self._conn.close()
