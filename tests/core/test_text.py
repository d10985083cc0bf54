"""The core's formatting and naming helpers: one of each, used by every part."""

import pytest

from science_gateway.core.names import check_name, is_unix_name
from science_gateway.core.text import format_bytes, format_walltime, quote_prefix, sanitize_comment


@pytest.mark.parametrize(
    "minutes, value",
    [(60, "01:00:00"), (90, "01:30:00"), (23 * 60, "23:00:00"), (24 * 60, "1-00:00:00"), (170 * 60, "7-02:00:00"),
     (1500, "1-01:00:00")],
)
def test_walltime(minutes, value):
    assert format_walltime(minutes) == value


@pytest.mark.parametrize("n, text", [(None, "an unknown size"), (999, "999 B"), (1234567, "1.2 MB"), (5e15, "5000.0 TB")])
def test_format_bytes(n, text):
    assert format_bytes(n) == text


def test_quote_prefix_is_short_and_escaped():
    assert quote_prefix("cpu") == "'cpu'"
    huge = "x" * 10_000_000
    assert quote_prefix(huge) == repr("x" * 64) + "..."
    assert quote_prefix("a\nb<script>") == "'a\\nb<script>'"
    assert quote_prefix(0) == "0" and quote_prefix(False) == "False"
    assert quote_prefix({"deep": [1] * 1000}) == "<dict>"


def test_comment_and_names():
    assert sanitize_comment('user=a"b\n') == "user=a_b_"
    assert len(sanitize_comment("x" * 1000)) == 200
    assert check_name("partition", "cpu-1") == "cpu-1"
    with pytest.raises(ValueError, match="partition name 'x y' must match"):
        check_name("partition", "x y")
    assert is_unix_name("alice") and not is_unix_name("#0") and not is_unix_name("-u") and not is_unix_name(None)
    # ``^...$`` matched before a trailing newline: "root\n" was a plain unix name, "cpu\n" a partition
    assert not is_unix_name("alice\n")
    with pytest.raises(ValueError):
        check_name("partition", "cpu\n")
