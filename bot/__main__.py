"""``python -m bot`` is the same as the ``sera`` command."""

from bot.adapters.cli import main

raise SystemExit(main())
