"""The one base class of errors caused by user input (config, files, servers), which the CLI turns
into a single clear line and exit code 2 instead of a traceback. Bugs stay ordinary exceptions."""

from __future__ import annotations

__all__ = ["DreamGymError", "USER_ERRORS"]


class DreamGymError(ValueError):
    """Bad user input: the message names the file, key or URL and what was expected."""


USER_ERRORS: tuple[type[BaseException], ...] = (DreamGymError,)
