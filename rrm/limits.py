"""Bounds on every input, named once: the library, the command line and the app share them.

A breach is refused before any work starts, with one line naming the limit (and the flag that raises it,
where users may want more). Media have their own bounds (rrm.media.MediaLimits).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import RRMError

MAX_TEXT_CHARS = 20_000  # a query, a response or a reference answer (--max-text-chars)
MAX_PROMPT_TOKENS = 16_384  # one prompt once encoded, media included, checked before generation (--max-prompt-tokens)
MAX_BON_RESPONSES = 16  # candidates ranked in one Best-of-N call
MAX_BATCH_PAIRS = 1_000  # pairs in one app request (--max-batch-pairs)
MAX_LINE_BYTES = 4 * 1024**2  # one line of a JSONL file
MAX_RUBRIC_CRITERIA = 16
MAX_RUBRIC_CHARS = 10_000  # every key, title, description, cue and facet of a rubric together
MAX_TEMPLATE_CHARS = 20_000  # a prompt template or a system prompt
MAX_REQUEST_SECONDS = 600  # how long one app request may hold the queue (--max-request-seconds)
MAX_MEDIA_ITEMS = 8  # images, videos and audio clips in one sample
MAX_ZIP_FILES = 10_000  # members of an uploaded media zip
MAX_ZIP_BYTES = 2 * 1024**3  # what the members a batch's pairs name may unpack to


@dataclass(frozen=True)
class InputLimits:
    """The bounds a judge applies to what it is asked to judge."""

    max_text_chars: int = MAX_TEXT_CHARS
    max_prompt_tokens: int = MAX_PROMPT_TOKENS
    max_responses: int = MAX_BON_RESPONSES
    max_media: int = MAX_MEDIA_ITEMS

    def check_media(self, count: int) -> None:
        if count > self.max_media:
            raise RRMError(f"a sample holds at most {self.max_media} media items; this one has {count}")


def over(what: str, size: int, limit: int, unit: str = "characters", flag: str | None = None) -> str:
    """The one-line message of a breached limit."""
    raise_it = f" ({flag} raises it)" if flag else ""
    return f"{what} is {size:,} {unit} long; the limit is {limit:,}{raise_it}"
