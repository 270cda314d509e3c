"""Secrets never leave the process: the one filter that error messages, log lines, reports and outputs go through.

    redact("HTTP 401 Invalid API key provided: Bearer sk-abc123...")  -> "HTTP 401 Invalid API key provided: [redacted]"

It removes the value of every secret it knows (keys read from the environment are registered by who reads
them; any environment variable named like a key, token, secret or password counts too), and any `Bearer ...`,
`sk-...` or `hf_...` token a server may echo back. `install_log_redaction()` applies it to every log record.
"""

from __future__ import annotations

import logging
import os
import re

REDACTED = "[redacted]"
_MIN_SECRET = 6  # shorter values would redact ordinary words
_TOKENS = re.compile(r"\bBearer\s+[A-Za-z0-9._~+/=-]+|\bsk-[A-Za-z0-9_-]{6,}|\bhf_[A-Za-z0-9]{10,}", re.I)
_SECRET_NAMES = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.I)
_known: set[str] = set()


def register_secret(value: str | None) -> None:
    """A value that must never be shown (a key this process read), from now on."""
    if value and len(value) >= _MIN_SECRET:
        _known.add(value)


def _secrets() -> list[str]:
    named = {v for k, v in os.environ.items() if _SECRET_NAMES.search(k) and v and len(v) >= _MIN_SECRET}
    return sorted(_known | named, key=len, reverse=True)  # longest first: a key inside another is not half-shown


def redact(text) -> str:
    """The text with every secret value and token-shaped string replaced by [redacted]."""
    text = str(text)
    for secret in _secrets():
        text = text.replace(secret, REDACTED)
    return _TOKENS.sub(REDACTED, text)


class _RedactedRecords:
    """A log record factory whose records carry their message redacted (for every logger and handler)."""

    def __init__(self, factory):
        self.factory = factory

    def __call__(self, *args, **kwargs):
        record = self.factory(*args, **kwargs)
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return record


def install_log_redaction() -> None:
    """Redact every log record from now on (once per process)."""
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, _RedactedRecords):
        logging.setLogRecordFactory(_RedactedRecords(factory))
