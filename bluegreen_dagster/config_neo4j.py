"""The `neo4j:` section of `config.yaml` (loaded by config.py): how to reach the server, which loader, readers,
readiness, a cluster's topology."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from bluegreen_dagster.config_section import Section
from bluegreen_dagster.names import IDENTIFIER_RE

# neo4j.uri schemes: direct (bolt) or routed (neo4j), plain or TLS with the system store / neo4j.tls_ca_file.
URI_SCHEMES = ("bolt", "bolt+s", "neo4j", "neo4j+s")


class TopologySettings(Section):
    """`CREATE DATABASE ... TOPOLOGY p PRIMARIES s SECONDARIES` on a Neo4j cluster (neo4j.topology, or per customer
    customers.<name>.topology). Neo4j 5 allows 1-11 primaries and 0-20 secondaries per database."""

    primaries: int = Field(1, ge=1, le=11)
    secondaries: int = Field(0, ge=0, le=20)


class Neo4jSettings(Section):
    host: str = "localhost"
    bolt_port: int = Field(7687, ge=1, le=65535)
    arrow_port: int = Field(8491, ge=1, le=65535)
    user: str = "neo4j"
    password: SecretStr = SecretStr("")
    tls: bool = False
    # PEM file with the CA that signed the server's certificate; the system store is used when unset.
    tls_ca_file: Path | None = None
    concurrency: int = Field(4, ge=1, le=256)
    # `arrow` needs GDS Enterprise with the Arrow Flight server; `cypher` works on any Neo4j Enterprise.
    loader: Literal["arrow", "cypher"] = "arrow"
    batch_size: int = Field(10_000, ge=1, le=1_000_000)
    # Seconds to wait for a new database to come online after the load.
    online_timeout: float = Field(300, gt=0)
    # GDS Arrow: a stream with no acknowledged batch for this many seconds counts as stalled (the load is aborted
    # and retried). Streams and LOAD_DONE finalisation themselves have no deadline, however long they run.
    stall_timeout: float = Field(300, gt=0)
    # GDS Arrow: send string node properties (GDS does not document them for database import; unverified).
    arrow_string_properties: bool = False
    # GDS Arrow: nulls in properties are refused (the Cypher loader stores no property, GDS would store NaN);
    # `nan` sends null floats as NaN instead.
    arrow_nulls: Literal["refuse", "nan"] = "refuse"
    # Readers (targets/neo4j/access.py, docs/neo4j-readers.md). Before the alias moves, the new database gets the
    # read privileges every role has on the current target, plus ACCESS and MATCH for these roles (per customer
    # too: customers.<name>.reader_roles); off only when grants are made on `*` or by the operator's own tooling.
    reader_access_follows_alias: bool = True
    reader_roles: list[str] = []
    # Users whose read of the new database is proven (a count through `impersonated_user`, which needs IMPERSONATE
    # for neo4j.user) before the alias moves; a user who cannot read blocks the switch. Per customer too.
    reader_users: list[str] = []
    # Ready before live (targets/neo4j/readiness.py): after the load, before verification, an index on the node key
    # of every label plus these (label -> property names), waited for until ONLINE within index_timeout seconds;
    # then the database is marked read-only (ALTER DATABASE ... SET ACCESS READ ONLY) unless read_only is false.
    indexes: dict[str, list[str]] = {}
    index_timeout: float = Field(600, gt=0)
    read_only: bool = True
    # A GDS Arrow import builds the store on the one server GDS runs on; on a cluster (SHOW SERVERS lists more than
    # one) the Arrow loader is refused unless this says the operator knows what GDS does there.
    arrow_on_cluster: bool = False
    # One Bolt URI instead of host/bolt_port/tls: bolt:// and bolt+s:// reach one server; neo4j:// and neo4j+s://
    # route (a cluster: admin work to the system database's writer, verification reads to a reader). It sets host,
    # bolt_port and tls; setting one of those as well, to another value, is an error.
    uri: str = ""
    # The topology of every new database (CREATE DATABASE ... TOPOLOGY); unset: the cluster's default allocation.
    # Per customer: customers.<name>.topology.
    topology: TopologySettings | None = None
    # GDS Arrow (targets/neo4j/arrow_mount.py): seconds GDS may take, after RELATIONSHIP_LOAD_DONE replied, to
    # register and start the database it wrote, plus 1 s per 20 MB of snapshot (the store may still be written).
    # Within that wait (bounded by online_timeout) no CREATE DATABASE is ever sent for it.
    arrow_mount_wait: float = Field(30, gt=0)

    @model_validator(mode="after")
    def _uri_sets_host_port_tls(self) -> Neo4jSettings:
        if not self.uri:
            return self
        parsed = urlsplit(self.uri)
        if parsed.scheme not in URI_SCHEMES or not parsed.hostname or parsed.path not in ("", "/") or parsed.query:
            raise ValueError(f"neo4j.uri {self.uri!r} is not a Bolt URI: write scheme://host[:port] with scheme "
                             f"{', '.join(URI_SCHEMES)}")
        try:
            port = parsed.port or 7687
        except ValueError:
            raise ValueError(f"neo4j.uri {self.uri!r} has an invalid port") from None
        found = {"host": parsed.hostname, "bolt_port": port, "tls": parsed.scheme.endswith("+s")}
        clash = [k for k, v in found.items() if k in self.model_fields_set and getattr(self, k) != v]
        if clash:
            raise ValueError(f"neo4j.uri {self.uri!r} disagrees with neo4j.{', neo4j.'.join(clash)}: set one of them")
        for key, value in found.items():
            object.__setattr__(self, key, value)
        return self

    @property
    def routing(self) -> bool:
        """True for neo4j:// and neo4j+s:// (routed, e.g. a cluster), False for a direct bolt:// connection."""
        return self.uri.startswith("neo4j")

    @field_validator("indexes")
    @classmethod
    def _index_names(cls, indexes: dict[str, list[str]]) -> dict[str, list[str]]:
        for label, properties in indexes.items():
            for name in (label, *properties):
                if not IDENTIFIER_RE.match(name):
                    raise ValueError(f"{name!r} is not a label or property name: use letters, digits and '_', "
                                     "starting with a letter")
        return indexes
