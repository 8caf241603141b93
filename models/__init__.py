"""The shipped models, package data of ``sera``: ``importlib.resources.files("sera.models")``."""
