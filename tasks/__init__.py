"""Prefect tasks: one module per stage; each runs the stage's library code over shards on Ray."""
