"""Names: customers, timestamps, the partition key (= database name), identifiers from the data, and how any name
from disk is shown in a message (`printable`).

Customer and timestamp map to ONE string that is both the Dagster partition key and the database name, through the
pair `partition_key()` / `parse_partition_key()`. Nothing else in the code builds or splits that string.

Name rules (Neo4j database names, which are the stricter of the two targets; Dagster's UI/CLI additionally
break on `/ , | ...`): lowercase ASCII letters, digits and `-`, starting with a letter, not ending with `-`,
3 to 63 characters, no `system` prefix. Customers are such names themselves (the alias is the customer name).
Timestamps are ASCII digits (e.g. Unix epoch seconds), compared as integers, and spelled one way only: without
leading zeros, so one time is one folder, one partition and one database.

Every pattern ends in `\\Z`, not `$`: `$` also matches before a trailing newline, so 'acme\\n' would pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

MAX_NAME_LENGTH = 63
_CUSTOMER = r"[a-z](?:[a-z0-9-]*[a-z0-9])?"
_DIGITS = r"[0-9]{1,20}"  # [0-9], not \d: \d also matches other scripts' digits, which int() would accept

_CUSTOMER_RE = re.compile(rf"{_CUSTOMER}\Z")
_DIGITS_RE = re.compile(rf"{_DIGITS}\Z")
_KEY_RE = re.compile(rf"(?P<customer>{_CUSTOMER})-(?P<timestamp>{_DIGITS})\Z")

# Labels, relationship types and property names come from data and end up (backtick-quoted) in statement text on
# both targets, so both accept exactly these: letters, digits and '_', starting with a letter.
MAX_IDENTIFIER_LENGTH = 200
IDENTIFIER_RE = re.compile(rf"[A-Za-z][A-Za-z0-9_]{{0,{MAX_IDENTIFIER_LENGTH - 1}}}\Z")


class InvalidName(ValueError):
    """A customer, timestamp or partition key that cannot name a database; the message says why."""


class SnapshotError(ValueError):
    """The snapshot's files cannot be loaded as they are (bad input: retrying will not help)."""


def printable(text: object) -> str:
    """`text` safe to put in a log line or message: control and other invisible characters (and '\\', so the
    result stays unambiguous) are escaped as Python does in repr, e.g. 'acme\\n' -> 'acme\\\\n'. Every name or path
    that comes from disk goes through this before it reaches a log, an error or the UI."""
    text = str(text)
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(ch if ch.isprintable() and ch != "\\" else _escaped(ch) for ch in text)


def shown_name(value: object) -> str:
    """A name from disk as a message shows it: a string quoted and escaped by `printable`, anything else as repr."""
    return f"'{printable(value)}'" if isinstance(value, str) else repr(value)


_SHORT_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(ch: str) -> str:
    if ch in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[ch]
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _invisible(text: str) -> str:
    return " (it contains control or invisible characters, shown escaped)" if not text.isprintable() else ""


def check_identifier(name: object, kind: str, path: object = None) -> str:
    """A label, relationship type or property name from the data, checked before it may reach any statement."""
    if not isinstance(name, str) or not IDENTIFIER_RE.match(name):
        where = f"{printable(path)}: " if path else ""
        if isinstance(name, str) and len(name) > MAX_IDENTIFIER_LENGTH:
            raise SnapshotError(f"{where}{kind} {shown_name(name[:40])}... has {len(name)} characters; the limit is "
                                f"{MAX_IDENTIFIER_LENGTH}: shorten it")
        shown = shown_name(name)
        raise SnapshotError(f"{where}{kind} {shown} is not allowed: use letters, digits and '_', starting with a "
                            "letter (e.g. Person, WORKS_AT)")
    return name


def validate_customer(customer: str) -> str:
    if not isinstance(customer, str) or not _CUSTOMER_RE.match(customer):
        shown = shown_name(customer)
        raise InvalidName(
            f"customer {shown} is not a valid name{_invisible(str(customer))}: use lowercase letters, digits and "
            "'-', starting with a letter and not ending with '-' (e.g. 'acme-corp')"
        )
    if customer.startswith("system"):
        raise InvalidName(f"customer '{customer}' is not a valid name: the prefix 'system' is reserved by Neo4j")
    if len(customer) < 3:
        raise InvalidName(f"customer '{customer}' is too short: aliases need at least 3 characters")
    return customer


def validate_timestamp(timestamp: str) -> str:
    if not isinstance(timestamp, str) or not _DIGITS_RE.match(timestamp):
        shown = shown_name(timestamp)
        raise InvalidName(
            f"timestamp {shown} is not valid{_invisible(str(timestamp))}: use digits only, e.g. Unix epoch seconds "
            "such as 1767741527"
        )
    if len(timestamp) > 1 and timestamp.startswith("0"):
        raise InvalidName(
            f"timestamp '{timestamp}' has leading zeros: one time has one spelling, because the folder name becomes "
            f"the partition and database name; rename the folder to '{int(timestamp)}'"
        )
    return timestamp


def partition_key(customer: str, timestamp: str | int) -> str:
    """The partition key and database name for one snapshot, e.g. ('acme', 1767741527) -> 'acme-1767741527'."""
    key = f"{validate_customer(customer)}-{validate_timestamp(str(timestamp))}"
    if len(key) > MAX_NAME_LENGTH:
        raise InvalidName(
            f"snapshot name '{key}' has {len(key)} characters; database names allow at most {MAX_NAME_LENGTH}: "
            "shorten the customer folder name"
        )
    return key


@dataclass(frozen=True, order=True)
class SnapshotId:
    """Who and when; orders by time within a customer."""

    customer: str
    ts: int
    timestamp: str = field(compare=False)

    @property
    def key(self) -> str:
        return partition_key(self.customer, self.timestamp)

    @property
    def created_at(self) -> datetime | None:
        """The timestamp as a UTC time when it looks like epoch seconds (for ages in `status`)."""
        return datetime.fromtimestamp(self.ts, UTC) if 0 < self.ts < 10**11 else None


def parse_partition_key(key: str) -> SnapshotId:
    """Inverse of `partition_key`; raises InvalidName for anything `partition_key` would not produce."""
    match = _KEY_RE.match(key) if isinstance(key, str) else None
    if not match:
        shown = shown_name(key)
        raise InvalidName(f"{shown} is not a snapshot name of the form <customer>-<timestamp>, e.g. 'acme-1767741527'")
    customer, timestamp = match.group("customer"), match.group("timestamp")
    if partition_key(customer, timestamp) != key:  # also enforces leading zeros, length and reserved-prefix rules
        raise InvalidName(f"'{key}' is not a valid snapshot name")
    return SnapshotId(customer, int(timestamp), timestamp)


def snapshot_id(customer: str, timestamp: str | int) -> SnapshotId:
    return parse_partition_key(partition_key(customer, timestamp))


def timestamp_of(name: str) -> int | None:
    """The time a snapshot folder's name spells, when it is a valid timestamp; else None (no message built)."""
    if _DIGITS_RE.match(name) and (len(name) == 1 or name[0] != "0"):
        return int(name)
    return None
