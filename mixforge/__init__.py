"""mixforge: raw text shards in an object store -> versioned pretraining-data mixtures."""

__version__ = "0.3.0"
