"""Thin Prefect flows: the order of stages, hooks and parameters."""
