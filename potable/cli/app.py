"""The `potable` Typer app and its command groups; the commands register themselves from their modules."""

from __future__ import annotations

import os

import typer

app = typer.Typer(
    help="potable: a governed ML lifecycle for a water-potability classifier.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
audit_app = typer.Typer(help="The hash-chained audit trail.", no_args_is_help=True)
governance_app = typer.Typer(help="Governance reports.", no_args_is_help=True)
rollout_app = typer.Typer(help="The local blue-green target (nginx + two BentoML slots).", no_args_is_help=True)
data_app = typer.Typer(help="The versioned training table (Delta Lake): start, log, show, diff.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
app.add_typer(governance_app, name="governance")
app.add_typer(rollout_app, name="rollout")
app.add_typer(data_app, name="data")


@app.callback()
def options(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks with the one-line errors (POTABLE_DEBUG=1)."),
) -> None:
    """potable: a governed ML lifecycle for a water-potability classifier."""
    if debug:
        os.environ["POTABLE_DEBUG"] = "1"  # read where errors are shown, and by the flows this process runs
