"""potable: a governed ML lifecycle for a water-potability classifier, orchestrated by Prefect."""

__version__ = "0.1.0"
