"""Shared core of InterestGraph: settings, names, the event schema, and small pure helpers.

Everything that the stream, the models and the API must agree on lives here, once.
Feast's ``feature_repo/`` imports from here too; nothing here imports ``feature_repo/``.
"""
