"""Names: one spelling per snapshot, nothing invisible, and how names from disk appear in messages."""

import pytest

from bluegreen_dagster.names import (
    InvalidName,
    SnapshotError,
    check_identifier,
    parse_partition_key,
    partition_key,
    printable,
    timestamp_of,
    validate_customer,
    validate_timestamp,
)

CONTROL = ["\n", "\r", "\t", "\x00", "\x1b", "\x7f", "\u200b", "\u2028", "\udcff"]


@pytest.mark.parametrize("ch", CONTROL)
@pytest.mark.parametrize("where", ["end", "start", "middle"])
def test_control_characters_are_refused_anywhere(ch: str, where: str) -> None:
    place = {"end": lambda s: s + ch, "start": lambda s: ch + s, "middle": lambda s: s[:2] + ch + s[2:]}[where]
    for call, value in ((validate_customer, place("acme")), (validate_timestamp, place("1767741527")),
                        (parse_partition_key, place("acme-1767741527"))):
        with pytest.raises(InvalidName) as err:
            call(value)
        assert ch not in str(err.value)  # the message shows the name escaped, never the raw character
        assert printable(value) in str(err.value)
    with pytest.raises(SnapshotError) as err:
        check_identifier(place("Person"), "label")
    assert ch not in str(err.value)


def test_a_trailing_newline_no_longer_passes() -> None:
    """`$` matches before a final newline: 'acme\\n' used to be a valid customer."""
    with pytest.raises(InvalidName, match=r"acme\\n.*control or invisible characters"):
        validate_customer("acme\n")
    with pytest.raises(InvalidName):
        partition_key("acme", "100\n")


def test_printable_escapes_what_a_terminal_would_interpret() -> None:
    assert printable("acme-corp") == "acme-corp"
    assert printable("/data/acme\n\x1b[31mFAKE") == "/data/acme\\n\\x1b[31mFAKE"
    assert printable("a\\nb") == "a\\\\nb"  # a literal backslash-n stays distinguishable from a newline
    assert printable("ok\u200b\udcff") == "ok\\u200b\\udcff"
    assert printable("Zürich café") == "Zürich café"  # printable non-ASCII stays readable
    assert all(c.isprintable() for c in printable("".join(CONTROL)))


def test_one_time_has_one_spelling() -> None:
    with pytest.raises(InvalidName, match="leading zeros.*rename the folder to '1767741527'"):
        validate_timestamp("01767741527")
    with pytest.raises(InvalidName, match="rename the folder to '0'"):
        partition_key("acme", "000")
    with pytest.raises(InvalidName, match="leading zeros"):
        parse_partition_key("acme-0100")
    assert partition_key("acme", "0") == "acme-0"
    assert partition_key("acme", 100) == "acme-100"


@pytest.mark.parametrize("name, ts", [("100", 100), ("0", 0), ("0100", None), ("1_000", None), ("١٢", None),
                                      ("100\n", None), ("", None), ("1" * 21, None)])
def test_timestamp_of_accepts_exactly_what_validation_accepts(name: str, ts: int | None) -> None:
    assert timestamp_of(name) == ts
    if ts is None:
        with pytest.raises(InvalidName):
            validate_timestamp(name)
    else:
        assert validate_timestamp(name) == name
