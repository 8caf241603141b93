"""The seed paper's CNN (arXiv 2503.19677) as sera trains it: ``learner.py`` is what the protocol calls."""
