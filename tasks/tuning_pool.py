"""Tuning trials spread over the work pool: `tuning.workers: N` submits N-1 `tune-share` flow runs (any
worker of the pool may take them), each taking trials from the one Optuna study on shared storage.

No train run waits on a worker that is not there: a share no worker has picked up by the time the
train run's own trials are done is cancelled, and whatever the shares did not finish (cancelled, failed,
crashed) is run by the train run itself, so the study always gets its whole budget.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from uuid import UUID

import optuna

TUNE_SHARE_DEPLOYMENT = "tune-share/tune-share"
DONE = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteShare:
    flow_run_id: UUID
    share: int
    n_trials: int


def submit_shares(parent_run_id: str, study_name: str, seed: int, counts: list[int]) -> list[RemoteShare]:
    """One `tune-share` flow run per non-empty count, as subflows of the running train flow (the UI shows
    them under it). Returns at once; the pool's workers start them."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    submitted = []
    for share, n in enumerate(counts, start=1):
        if not n:
            continue
        try:
            run = run_deployment(
                TUNE_SHARE_DEPLOYMENT,
                parameters={
                    "parent_run_id": parent_run_id,
                    "study_name": study_name,
                    "n_trials": n,
                    "share": share,
                    "seed": seed,
                },
                timeout=0,
            )
        except ObjectNotFound:  # e.g. `potable train` on its private server: no pool, so this run does it all
            logger.warning("no %s deployment on this Prefect API: all trials run here", TUNE_SHARE_DEPLOYMENT)
            return submitted
        submitted.append(RemoteShare(run.id, share, n))
    return submitted


def cancel_shares(shares: list[RemoteShare]) -> None:
    """Best effort when the train run fails: stop shares that would otherwise work for a dead study."""
    from prefect import get_client
    from prefect.states import Cancelling

    with get_client(sync_client=True) as client:
        for share in shares:
            state = client.read_flow_run(share.flow_run_id).state
            if state is None or not state.is_final():
                client.set_flow_run_state(share.flow_run_id, Cancelling(message="the train run failed"), force=True)


def settle_shares(
    shares: list[RemoteShare], pickup_seconds: float, timeout_seconds: float | None, poll_seconds: float = 1.0
) -> dict[int, str]:
    """Wait for the shares a worker runs; cancel those no worker has started within `pickup_seconds` of
    now (and any still running after `timeout_seconds`, if set). Returns each share's final state name."""
    from prefect import get_client
    from prefect.states import Cancelled, Cancelling

    outcome: dict[int, str] = {}
    pickup = time.monotonic() + pickup_seconds
    deadline = time.monotonic() + timeout_seconds if timeout_seconds else float("inf")
    with get_client(sync_client=True) as client:
        pending = list(shares)
        while pending:
            for share in list(pending):
                state = client.read_flow_run(share.flow_run_id).state
                waiting = state is None or state.is_scheduled()  # no worker has taken it yet
                if state is not None and state.is_final():
                    outcome[share.share] = state.name
                elif (waiting and time.monotonic() > pickup) or time.monotonic() > deadline:
                    why = "not started by any worker" if waiting else "over time"
                    # A running share is asked to stop (its worker kills it on Cancelling); a waiting one just ends.
                    ending = Cancelled if waiting else Cancelling
                    client.set_flow_run_state(share.flow_run_id, ending(message=f"tune-share {why}"), force=True)
                    outcome[share.share] = f"Cancelled ({why})"
                else:
                    continue
                pending.remove(share)
            if pending:
                time.sleep(poll_seconds)
    return outcome


def trials_done(study: optuna.Study) -> int:
    return sum(t.state in DONE for t in study.get_trials(deepcopy=False))
