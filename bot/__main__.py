"""``python -m bot`` is the same as the ``sera`` command."""

from bot.cli import main

raise SystemExit(main())
