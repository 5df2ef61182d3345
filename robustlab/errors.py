"""User-facing errors: raised for bad input, printed by the command line as one line."""


class RobustlabError(Exception):
    """An error caused by the user's input (a name, a path, a value), with a clear message.

    The command line prints ``robustlab: error: <message>`` and exits with status 2;
    library callers get an exception whose message names the problem.
    """


class ConfigError(RobustlabError, ValueError):
    """A configuration key or value is invalid."""


class DataError(RobustlabError):
    """A dataset file is missing, truncated or fails its checksum."""


class CheckpointError(RobustlabError):
    """A checkpoint cannot be loaded into the requested model."""
