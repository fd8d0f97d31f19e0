"""Expected refusals end a run in a state named for them, with one readable line in its log.

A refusal (a batch that failed validation, a version the policy refused to promote, a release that would
not go ahead) is the platform working, not crashing: raised, Prefect would log its traceback and a bare
`Failed`. Returned as a Failed state named for the refusal, the runs list says what happened
(`BatchRejected`, `PromotionRefused`, `ReleaseRefused`), the log holds one error line, and calling the flow
still raises the exception (the state carries it), so the CLI and callers handle it as before.
"""

from __future__ import annotations

from prefect import get_run_logger
from prefect.states import Failed, State


def refused(refusal: Exception) -> State:
    get_run_logger().error(str(refusal))
    return Failed(name=type(refusal).__name__, message=str(refusal)[:2000], data=refusal)
