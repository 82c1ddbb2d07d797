"""`secrets.scrub`, the one place secrets are blanked out of messages."""

from __future__ import annotations

from pydantic import SecretStr

from bluegreen_dagster.secrets import scrub


def test_every_secret_is_blanked_wherever_it_appears():
    text = "auth failed for neo4j:s3cret-pw at bolt://h (token s3cret-pw, key abc-key)"
    assert scrub(text, SecretStr("s3cret-pw"), "abc-key") == "auth failed for neo4j:*** at bolt://h (token ***, key ***)"


def test_a_secret_that_contains_another_leaves_no_part_behind():
    assert scrub("pw=hunter22", "hunter", "hunter22") == "pw=***"


def test_empty_missing_and_very_short_secrets_leave_the_text_readable():
    text = "neo4j is not reachable"
    assert scrub(text, None, "", SecretStr(""), "ne") == text
