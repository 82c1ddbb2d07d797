"""The one place secrets are blanked out of text before it reaches a message, a log line or run metadata."""

from __future__ import annotations

from pydantic import SecretStr

MASK = "***"
# A shorter secret is left alone: blanking every "ab" would make messages unreadable and hide nothing worth hiding.
MIN_LENGTH = 3


def scrub(text: str, *secrets: str | SecretStr | None) -> str:
    """`text` with every occurrence of each secret replaced by `***` (longest first, so no part of one survives)."""
    values = (s.get_secret_value() if isinstance(s, SecretStr) else s for s in secrets)
    for value in sorted((v for v in values if v and len(v) >= MIN_LENGTH), key=len, reverse=True):
        text = text.replace(value, MASK)
    return text
