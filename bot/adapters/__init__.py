"""The adapters: each turns one outside world into calls on the core and the core's results back.

``cli`` is the ``sera`` command, ``doctor`` its deployment check, ``discord`` the bot. The core
(everything in ``bot`` outside this package) never imports from here; ``tests/test_layers.py`` holds
both sides to that.
"""
