"""The project's exceptions: one message a user can act on, never a library traceback."""


class RRMError(Exception):
    """Bad input or configuration, with a one-line message naming the problem."""


class MediaError(RRMError):
    """An image, video or audio file that cannot be used; the message names the file."""


class ModelLoadError(RRMError):
    """A model, adapter or processor that cannot be loaded; the message says what to pass instead."""


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type's name when it has none), cut to `limit`."""
    text = str(e).strip().splitlines()
    return text[0][:limit] if text else type(e).__name__
