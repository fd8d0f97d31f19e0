"""Batches a data team might send, made from the bundled rows (shared by tests and benchmarks)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.settings import FEATURES


def remeasured(frame: pd.DataFrame, seed: int, noise: float = 0.01) -> pd.DataFrame:
    """The same samples measured again with `noise` relative error: new content, believable labels."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    for name in FEATURES:
        out[name] = out[name] * (1 + rng.normal(0, noise, len(out)))
    return out
