"""One canonical-JSON hash (runs.sha256_json) for run ids, run config hashes and mixture spec hashes: pinned."""

from mixforge import runs
from mixforge.mixtures import spec
from mixforge.storage import InputShard

INPUTS = [InputShard(uri="s3://b/raw/a.jsonl.gz", size=123), InputShard(uri="s3://b/raw/b.parquet", size=7)]
CONFIG = {"filter": {"rules": [{"name": "gopher"}], "x": 1.5}, "when": None}


def test_run_id_and_config_hash_are_pinned():
    # values computed by the code before the hash was shared with mixture specs: a change here moves every run id
    assert runs.compute_run_id(INPUTS, CONFIG, "1.2.3") == "run-4785c406daa57a6d"
    assert runs.sha256_json(CONFIG) == "d486052d2b79dad92c9eda800c128656171ac35c5d3f3b33d35c476aa3aa5e5b"


def test_mixture_specs_hash_with_the_same_function():
    assert spec.sha256_json is runs.sha256_json
