"""The `smoke:` section of `config.yaml` (loaded by config.py), also per customer: the warm-up and the smoke
queries run on a new database after verification, before the switch (smoke.py)."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from bluegreen_dagster.config_section import Section

_SMOKE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class SmokeQuery(Section):
    """One smoke query and exactly one expectation: `min_rows`, `equals` (with `column`) or `within_seconds`."""

    name: str
    query: str = Field(min_length=1)
    min_rows: int | None = Field(None, ge=0)        # the query returns at least this many rows
    column: str | None = None                       # with `equals`: this column of the first row ...
    equals: bool | int | float | str | None = None  # ... holds this value
    within_seconds: float | None = Field(None, gt=0, le=3600)  # the query runs to its end within this time
    # The time limit of a `min_rows` / `equals` query (`within_seconds` is its own limit).
    timeout_seconds: float = Field(60, gt=0, le=3600)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if not _SMOKE_NAME_RE.match(name):
            raise ValueError("a smoke query name is 1-64 letters, digits, '_', '.' or '-', e.g. people-exist")
        return name

    @model_validator(mode="after")
    def _one_expectation(self) -> SmokeQuery:
        given = [key for key in ("min_rows", "equals", "within_seconds") if key in self.model_fields_set]
        if len(given) != 1:
            raise ValueError(f"smoke query {self.name!r} needs exactly one expectation: min_rows: N, equals: X "
                             f"(with column: NAME) or within_seconds: T (it has {', '.join(given) or 'none'})")
        if ("column" in self.model_fields_set) != ("equals" in given):
            raise ValueError(f"smoke query {self.name!r}: column and equals go together (the value of that column "
                             "in the first row)")
        if "within_seconds" in given and "timeout_seconds" in self.model_fields_set:
            raise ValueError(f"smoke query {self.name!r}: within_seconds is its own time limit; drop timeout_seconds")
        return self

    @property
    def limit_seconds(self) -> float:
        return self.within_seconds if self.within_seconds is not None else self.timeout_seconds


class WarmupQuery(Section):
    """A read-only query run on the new database before the smoke queries and the switch (e.g. to fill caches)."""

    query: str = Field(min_length=1)
    timeout_seconds: float = Field(600, gt=0, le=86_400)


class SmokeSettings(Section):
    """`smoke:` (all customers) or `customers.<name>.smoke:` (merged over it, see `merged`)."""

    warmup: WarmupQuery | None = None
    queries: list[SmokeQuery] = []

    @field_validator("queries")
    @classmethod
    def _unique_names(cls, queries: list[SmokeQuery]) -> list[SmokeQuery]:
        seen: set[str] = set()
        for q in queries:
            if q.name in seen:
                raise ValueError(f"two smoke queries are named {q.name!r}: names must be unique")
            seen.add(q.name)
        return queries

    def merged(self, override: SmokeSettings | None) -> SmokeSettings:
        """This (global) plan with a customer's on top: a customer query replaces the global one of the same name,
        others are added; the customer's `warmup` (even `warmup: null`) replaces the global one."""
        if override is None:
            return self
        names = {q.name for q in override.queries}
        queries = [q for q in self.queries if q.name not in names] + list(override.queries)
        warmup = override.warmup if "warmup" in override.model_fields_set else self.warmup
        return SmokeSettings(warmup=warmup, queries=queries)
