"""Errors that carry a message meant for a person, not a traceback.

Anything raised as a ``SeraError`` is an expected failure (bad input, bad config): adapters show
``str(error)`` to the user and log it for the operator; anything else is a bug.
"""


class SeraError(Exception):
    """An expected failure whose message is safe and useful to show to a user."""


class AudioError(SeraError):
    """The audio could not be used: empty, corrupt, not audio, too big or too long."""


class ConfigError(SeraError):
    """The configuration file is missing or wrong; the message names the file and the key."""


class ModelError(SeraError):
    """The model file is missing or lacks the metadata the pipeline needs."""
