"""schema.set_column: the one "replace the column if present, else append it"."""

import pyarrow as pa

from mixforge import schema as S


def test_set_column_replaces_in_place_or_appends():
    t = pa.table({"id": ["a", "b"], "lang": ["en", "de"], "text": ["x", "y"]})
    replaced = S.set_column(t, S.LANG, pa.array(["fr", "fr"]))
    assert replaced.column_names == ["id", "lang", "text"]  # a rerun keeps the column's place
    assert replaced.column(S.LANG).to_pylist() == ["fr", "fr"]
    appended = S.set_column(t, S.LANG_SCORE, pa.array([0.5, 0.25]))
    assert appended.column_names == ["id", "lang", "text", "lang_score"]
    assert appended.column(S.LANG_SCORE).to_pylist() == [0.5, 0.25]
