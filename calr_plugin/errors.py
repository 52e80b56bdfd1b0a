"""User-facing errors: one line that names the file, key or value and what is expected.

``tools/*.py`` catch ``CalrError`` and print ``error: <message>`` with exit code 2
instead of a traceback from deep inside FastReID.
"""


class CalrError(Exception):
    """Base class of every error that is the user's to fix (config, data, files)."""


class ConfigError(CalrError):
    """A config key is unknown, has the wrong type, or an impossible value."""


class DataError(CalrError):
    """A dataset folder, split or image file is missing or malformed."""
