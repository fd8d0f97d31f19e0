"""The vocabulary every layer shares: settings, typed configs, batches, expectations, the model-version record.

Imports libraries only, never flows/, tasks/, governance/, deployments/ or the entry points (a CI contract).
"""
