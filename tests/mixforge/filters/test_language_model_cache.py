"""The language filter's remote model goes through the one model cache (classify.store.local_copy)."""

import hashlib

import fsspec

from mixforge.filters.config import LanguageIDConfig
from mixforge.filters.language import LanguageID, default_lid_model_path, local_model_path


def test_remote_lid_model_cached_by_sha256_of_uri_and_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv("MIXFORGE_MODEL_CACHE", str(tmp_path / "cache"))
    uri = "memory://mixforge-test-models/lid.176.ftz"
    fs = fsspec.filesystem("memory")
    fs.pipe(uri, default_lid_model_path().read_bytes())
    try:
        path = local_model_path(uri)
        assert path == str(tmp_path / "cache" / hashlib.sha256(uri.encode()).hexdigest() / "lid.176.ftz")
        assert open(path, "rb").read() == default_lid_model_path().read_bytes()
        fs.rm(uri)  # a second call is served from the cache
        assert local_model_path(uri) == path
        lid = LanguageID(LanguageIDConfig(model=uri))
        lid.setup()
        assert lid.model.predict(["the cat sat on the mat and looked out of the window"], k=1)[0][0][0] == (
            "__label__en"
        )
    finally:
        if fs.exists(uri):
            fs.rm(uri)


def test_local_model_paths_are_used_in_place():
    assert local_model_path(None) == str(default_lid_model_path())
    assert local_model_path(f"file://{default_lid_model_path()}") == str(default_lid_model_path())
