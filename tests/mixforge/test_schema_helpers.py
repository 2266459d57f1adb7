"""schema helpers: set_column (the one "replace the column if present, else append it") and text_chars."""

import pyarrow as pa
import pyarrow.compute as pc

from mixforge import schema as S


def test_set_column_replaces_in_place_or_appends():
    t = pa.table({"id": ["a", "b"], "lang": ["en", "de"], "text": ["x", "y"]})
    replaced = S.set_column(t, S.LANG, pa.array(["fr", "fr"]))
    assert replaced.column_names == ["id", "lang", "text"]  # a rerun keeps the column's place
    assert replaced.column(S.LANG).to_pylist() == ["fr", "fr"]
    appended = S.set_column(t, S.LANG_SCORE, pa.array([0.5, 0.25]))
    assert appended.column_names == ["id", "lang", "text", "lang_score"]
    assert appended.column(S.LANG_SCORE).to_pylist() == [0.5, 0.25]


def _utf8_length_sum(text) -> int:
    return int(pc.sum(pc.utf8_length(text)).as_py() or 0)


def test_text_chars_equals_the_sum_of_utf8_lengths_in_every_layout():
    from mixforge.schema import text_chars

    words = ["plain", "", "café naïve", "日本語のテキスト", "emoji 🧪🚀 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "\u0301combining", "x" * 3000]
    texts = [words[i % len(words)] * (1 + i % 5) for i in range(2_500)]  # more than one 1 MiB count block
    plain = pa.array(texts)
    assert plain.nbytes > 1 << 20
    cases = {
        "string": plain,
        "large_string": pa.array(texts, pa.large_string()),
        "sliced": plain.slice(7, 1_900),
        "empty slice": plain.slice(3, 0),
        "only empty strings": pa.array(["", "", ""]),
        "with nulls": pa.array([None if i % 7 == 0 else t for i, t in enumerate(texts[:300])]),
        "chunked": pa.chunked_array([plain.slice(0, 10), pa.array([], pa.string()), plain.slice(10, 500)]),
        "no chunks": pa.chunked_array([], pa.string()),
    }
    for name, text in cases.items():
        assert text_chars(text) == _utf8_length_sum(text), name
    assert text_chars(pa.array(["añ🧪"])) == 3  # a check that cannot pass by counting bytes
