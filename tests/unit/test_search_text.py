"""Query text made into terms, and the terms into FTS5 and tsquery text that only ever holds
words: whatever is typed, FTS5 accepts what is made of it."""

from __future__ import annotations

import sqlite3

from hypothesis import given, settings
from hypothesis import strategies as st

from cog.db.search import Criteria, Term, fts5_query, parse_text, tsquery


def test_words_phrases_and_prefixes() -> None:
    assert parse_text("misty fo") == (Term("misty"), Term("fo", prefix=True))
    assert parse_text("misty fox ") == (Term("misty"), Term("fox"))
    assert parse_text('owl "misty forest"') == (Term("owl"), Term("misty forest"))
    assert parse_text('owl "misty fo') == (Term("owl"), Term("misty fo", prefix=True))
    assert parse_text('"misty fo ') == (Term("misty fo"),)
    assert parse_text("foxg* moon ") == (Term("foxg", prefix=True), Term("moon"))
    assert parse_text("a") == (Term("a"),)  # one letter is never a prefix
    assert parse_text("f* ") == (Term("f"),)
    assert parse_text('fo"x') == (Term("fo"), Term("x"))  # a quote starts a phrase
    assert parse_text(" * : ( \" ' ") == ()  # punctuation alone is no term
    assert parse_text("\tЁжик\nв тумане") == (
        Term("Ёжик"),
        Term("в"),
        Term("тумане", prefix=True),
    )


def test_fts5_text_is_quoted_strings_only() -> None:
    terms = parse_text('he said "stop" NEAR( fo')
    assert fts5_query(Criteria(terms=terms)) == (
        '{prompt original_filename} : ("he" AND "said" AND "stop" AND "NEAR(" AND "fo"*)'
    )
    assert fts5_query(Criteria(terms=parse_text('a"b" '))) == (
        '{prompt original_filename} : ("a" AND "b")'
    )
    assert fts5_query(Criteria(tags=("red fox", "★", 'say "hi"'))) == (
        'tags : "red fox" AND tags : "say ""hi"""'
    )
    assert fts5_query(Criteria()) is None


def test_tsquery_text_is_quoted_operands_only() -> None:
    assert tsquery(Criteria(terms=parse_text("misty fo"))) == "('misty') & ('fo':*)"
    assert tsquery(Criteria(terms=parse_text("it's a\\b:* "))) == (
        "('it''s' | 'it s') & ('a\\\\b:' | 'a b')"
    )
    assert tsquery(Criteria(terms=parse_text("sunset.jpg"))) == (
        "('sunset.jpg':* | 'sunset jpg':*)"
    )
    assert tsquery(Criteria()) is None


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=80), st.lists(st.text(max_size=20), max_size=3))
def test_fts5_accepts_whatever_is_typed(text: str, tags: list[str]) -> None:
    connection = sqlite3.connect(":memory:")
    connection.execute(
        "CREATE VIRTUAL TABLE t USING fts5(prompt, original_filename, tags, "
        "tokenize='unicode61 remove_diacritics 2')"
    )
    connection.execute("INSERT INTO t VALUES ('a misty fox', 'fox.png', '[\"red\"]')")
    match = fts5_query(Criteria(terms=parse_text(text), tags=tuple(tags)))
    if match is not None:
        connection.execute("SELECT rowid FROM t WHERE t MATCH ?", (match,)).fetchall()
    connection.close()
