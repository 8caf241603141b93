"""``python -m sera`` is the same as the ``sera`` command."""

from sera.adapters.cli import main

raise SystemExit(main())
