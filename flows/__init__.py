"""Prefect flows: the DAG only (what runs after what, with which parameters)."""
