"""Deduplication: exact and MinHash-LSH fuzzy duplicates over a whole run, one keeper per cluster.

The library core, pure vectorised functions:

- `hashing`: stable 64-bit string hashes (persistable), exact-duplicate hashes.
- `minhash`: MinHash signatures, LSH band hashes, bucket rows, estimated Jaccard.
- `clusters`: candidate edges from buckets, connected components, keeper choice.
- `boilerplate`: corpus-wide repeated-line detection and removal.
- `config`: the pydantic models (`DedupConfig` and its parts).

The corpus-scale stage built on it, also library code:

- `keys`: the bit layout of document keys (run and index).
- `layouts`: where a run's work files and the persistent index live, and their schemas.
- `partitions`: how many partitions the band-bucket shuffle has.
- `run`: `DedupRun`, what every step of a run shares.
- `steps`: the per-shard and per-partition steps (boilerplate lines, signatures, edges, verify, clusters).
- `index`: the persistent index's settings, and a run's documents appended as a segment.
- `apply`: `ApplyDedup`, the stage that keeps one document per cluster.
- `composite`: `run_dedup`, the DAG of those steps over an injected executor; registered as the
  `dedup` curation stage (mixforge.stages.registry), which the curate flow runs on Ray.
"""

from mixforge.dedup.clusters import ClusterAssignment, candidate_edges, choose_keepers, connected_components
from mixforge.dedup.config import BoilerplateConfig, DedupConfig, ExactConfig, KeepConfig, MinHashConfig
from mixforge.dedup.hashing import exact_hashes, hash_strings
from mixforge.dedup.minhash import MinHasher, estimated_jaccard, is_empty

__all__ = [
    "BoilerplateConfig",
    "ClusterAssignment",
    "DedupConfig",
    "ExactConfig",
    "KeepConfig",
    "MinHashConfig",
    "MinHasher",
    "candidate_edges",
    "choose_keepers",
    "connected_components",
    "estimated_jaccard",
    "exact_hashes",
    "hash_strings",
    "is_empty",
]
