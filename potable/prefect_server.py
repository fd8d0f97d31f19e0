"""The Prefect CLI (`prefect …`, same arguments), exiting without a collection pass over its whole heap.

A command's private Prefect server stops when the command ends, and the command waits for it. Prefect's
server is down ~0.2 s after SIGINT, but the interpreter then spent ~2 s more tearing its heap down through
repeated garbage collections: freezing the heap at exit skips those passes (every file and socket is
closed by then; nothing is left to collect that matters). Run as `python -m potable.prefect_server`.
"""

from __future__ import annotations

import atexit
import gc

from prefect.cli import app

if __name__ == "__main__":
    atexit.register(gc.freeze)
    app()
