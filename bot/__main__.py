"""``python -m sera`` is the same as the ``sera`` command.

``python -m`` puts the current folder first on ``sys.path``: a package or a ``*.dist-info`` lying there
(a download, a planted file) would be imported or read as installed. sera is already imported from
where it is installed, so that entry goes before anything else is looked up.
"""

import os
import sys

if sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from sera.adapters.cli import main  # noqa: E402  (after the path is cleaned)

raise SystemExit(main())
