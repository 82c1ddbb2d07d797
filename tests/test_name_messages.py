"""What a user reads when a folder, customer, timestamp or data identifier is refused: the name as it is on disk
(quoted, invisible characters escaped, never raw), the rule it breaks and what to rename it to; and the limits
exactly at their edges (63-character database names, 20-digit timestamps, 200-character identifiers)."""

from datetime import UTC, datetime

import pytest

from bluegreen_dagster.names import (
    InvalidName,
    SnapshotError,
    SnapshotId,
    check_identifier,
    parse_partition_key,
    partition_key,
    printable,
    snapshot_id,
    validate_customer,
    validate_timestamp,
)

CUSTOMER_RULE = ("use lowercase letters, digits and '-', starting with a letter and not ending with '-' "
                 "(e.g. 'acme-corp')")
TIMESTAMP_RULE = "use digits only, e.g. Unix epoch seconds such as 1767741527"
IDENTIFIER_RULE = "use letters, digits and '_', starting with a letter (e.g. Person, WORKS_AT)"


def refused(call, *args) -> str:
    with pytest.raises((InvalidName, SnapshotError)) as err:
        call(*args)
    return str(err.value)


@pytest.mark.parametrize(("customer", "message"), [
    ("Acme", f"customer 'Acme' is not a valid name: {CUSTOMER_RULE}"),
    ("o'brien", f"customer 'o'brien' is not a valid name: {CUSTOMER_RULE}"),  # quoted as typed, not repr'd
    (None, f"customer None is not a valid name: {CUSTOMER_RULE}"),
    ("acme\n", "customer 'acme\\n' is not a valid name (it contains control or invisible characters, shown "
               f"escaped): {CUSTOMER_RULE}"),
    ("systemx", "customer 'systemx' is not a valid name: the prefix 'system' is reserved by Neo4j"),
    ("ab", "customer 'ab' is too short: aliases need at least 3 characters"),
])
def test_a_refused_customer_says_which_name_and_why(customer, message: str) -> None:
    assert refused(validate_customer, customer) == message


def test_customer_edges_three_characters_and_system_only_as_a_prefix() -> None:
    for ok in ("abc", "a-1", "my-system", "sys", "a" * 63):
        assert validate_customer(ok) == ok
    for bad in ("system", "system-a", "a-", "-ab", "1ab", "a_b"):
        with pytest.raises(InvalidName):
            validate_customer(bad)


@pytest.mark.parametrize(("timestamp", "message"), [
    ("12a", f"timestamp '12a' is not valid: {TIMESTAMP_RULE}"),
    (7, f"timestamp 7 is not valid: {TIMESTAMP_RULE}"),
    ("1" * 21, f"timestamp '{'1' * 21}' is not valid: {TIMESTAMP_RULE}"),
    ("12\t", f"timestamp '12\\t' is not valid (it contains control or invisible characters, shown escaped): "
             f"{TIMESTAMP_RULE}"),
    ("007", "timestamp '007' has leading zeros: one time has one spelling, because the folder name becomes the "
            "partition and database name; rename the folder to '7'"),
    ("00", "timestamp '00' has leading zeros: one time has one spelling, because the folder name becomes the "
           "partition and database name; rename the folder to '0'"),
])
def test_a_refused_timestamp_says_which_and_how_to_rename_it(timestamp, message: str) -> None:
    assert refused(validate_timestamp, timestamp) == message


def test_timestamp_edges_zero_and_twenty_digits() -> None:
    for ok in ("0", "1", "10", "1" * 20):
        assert validate_timestamp(ok) == ok


def test_a_database_name_may_have_63_characters_not_64() -> None:
    assert len(partition_key("a" * 53, "123456789")) == 63
    assert refused(partition_key, "a" * 54, "123456789") == (
        f"snapshot name '{'a' * 54}-123456789' has 64 characters; database names allow at most 63: shorten the "
        "customer folder name")
    assert partition_key("acme", 1767741527) == "acme-1767741527"  # an int timestamp is spelled as digits


@pytest.mark.parametrize(("key", "message"), [
    ("acme", "'acme' is not a snapshot name of the form <customer>-<timestamp>, e.g. 'acme-1767741527'"),
    (None, "None is not a snapshot name of the form <customer>-<timestamp>, e.g. 'acme-1767741527'"),
    ("acme-1\n", "'acme-1\\n' is not a snapshot name of the form <customer>-<timestamp>, e.g. 'acme-1767741527'"),
])
def test_a_refused_snapshot_name_shows_the_form_expected(key, message: str) -> None:
    assert refused(parse_partition_key, key) == message


def test_a_snapshot_name_parses_back_into_customer_and_time() -> None:
    sid = parse_partition_key("my-co-2-1767741527")
    assert (sid.customer, sid.ts, sid.timestamp, sid.key) == ("my-co-2", 1767741527, "1767741527",
                                                              "my-co-2-1767741527")
    assert snapshot_id("acme", 5) == SnapshotId("acme", 5, "5")
    assert snapshot_id("acme", 5).key == "acme-5"
    assert sorted([snapshot_id("acme", 100), snapshot_id("acme", 20)]) == [snapshot_id("acme", 20),
                                                                          snapshot_id("acme", 100)]


def test_created_at_only_for_times_that_look_like_epoch_seconds() -> None:
    assert snapshot_id("acme", 1).created_at == datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert snapshot_id("acme", 1767741527).created_at == datetime.fromtimestamp(1767741527, UTC)
    assert snapshot_id("acme", 10**11 - 1).created_at == datetime.fromtimestamp(10**11 - 1, UTC)
    assert snapshot_id("acme", 0).created_at is None
    assert snapshot_id("acme", 10**11).created_at is None  # a date-like 20260107... number, not seconds


def test_identifier_edges_and_messages_naming_the_file() -> None:
    assert check_identifier("A" * 200, "label") == "A" * 200
    assert check_identifier("a_1", "property") == "a_1"
    assert refused(check_identifier, "A" * 201, "label", "/x/nodes/a.parquet") == (
        f"/x/nodes/a.parquet: label '{'A' * 40}'... has 201 characters; the limit is 200: shorten it")
    assert refused(check_identifier, "1x", "property", "p.parquet") == (
        f"p.parquet: property '1x' is not allowed: {IDENTIFIER_RULE}")
    assert refused(check_identifier, "a b\n", "type") == f"type 'a b\\n' is not allowed: {IDENTIFIER_RULE}"
    assert refused(check_identifier, 3, "type") == f"type 3 is not allowed: {IDENTIFIER_RULE}"
    assert refused(check_identifier, "_x", "label", "") == f"label '_x' is not allowed: {IDENTIFIER_RULE}"


@pytest.mark.parametrize(("raw", "shown"), [
    ("\xad", "\\xad"),  # soft hyphen: invisible, one byte
    ("\x07", "\\x07"),
    ("\u200b", "\\u200b"),  # zero-width space
    ("\U000e0001", "\\U000e0001"),  # a language tag, beyond the 16-bit range
    ("a\\b", "a\\\\b"),  # a backslash is doubled, so an escape shown is never ambiguous
    ("plain name-1.parquet", "plain name-1.parquet"),
    (5, "5"),
])
def test_invisible_characters_are_shown_escaped(raw, shown: str) -> None:
    assert printable(raw) == shown


def test_an_identifier_of_exactly_200_characters_is_judged_by_its_characters_not_its_length() -> None:
    assert refused(check_identifier, "1" + "A" * 199, "label") == (
        f"label '1{'A' * 199}' is not allowed: {IDENTIFIER_RULE}")
