"""sera: hear emotion in speech.

The core (decode -> speech segments -> analyzers -> reporters) lives here and knows nothing of Discord;
``bot.discord`` is one adapter over it and ``bot.cli`` another. Plugin authors import from ``bot.plugin``.
"""

__version__ = "0.1.0"
DISTRIBUTION = "sera"  # the distribution whose plugins are the built-ins
