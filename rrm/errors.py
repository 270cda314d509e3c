"""The project's exceptions: one message a user can act on, never a library traceback."""


class RRMError(Exception):
    """Bad input or configuration, with a one-line message naming the problem."""


class MediaError(RRMError):
    """An image, video or audio file that cannot be used; the message names the file."""


class ModelLoadError(RRMError):
    """A model, adapter or processor that cannot be loaded; the message says what to pass instead."""
