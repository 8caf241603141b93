"""sera: hear emotion in speech.

The core (decode -> speech segments -> analyzers -> reporters) lives here and knows nothing of Discord;
the adapters over it live in ``sera.adapters``: the Discord bot and the ``sera`` command line. Plugin
authors import from ``sera.plugin``.
"""

__version__ = "0.1.0"
DISTRIBUTION = "sera-voice"  # the distribution whose plugins are the built-ins
