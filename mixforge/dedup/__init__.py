"""Deduplication library core: pure, vectorised functions the distributed dedup stage calls.

- `hashing`: stable 64-bit string hashes (persistable), exact-duplicate hashes.
- `minhash`: MinHash signatures, LSH band hashes, bucket rows, estimated Jaccard.
- `clusters`: candidate edges from buckets, connected components, keeper choice, verification.
- `boilerplate`: corpus-wide repeated-line detection and removal.
- `config`: the pydantic models (`DedupConfig` and its parts).

Orchestration (shards -> band buckets partitioned by band_hash % partitions -> edges per
partition -> components over all edges -> keep/remove per shard) lives in `tasks/`.
"""

from mixforge.dedup.clusters import ClusterAssignment, candidate_edges, choose_keepers, connected_components, verify_edges
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
    "verify_edges",
]
