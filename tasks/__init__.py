"""One module per stage; Prefect tasks wrapping plain, unit-tested functions."""
