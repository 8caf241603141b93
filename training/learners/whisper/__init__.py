"""The Whisper-encoder model (the default analyzer's): ``learner.py`` is what the protocol calls."""
