"""Training the emotion CNN (``pip install -e .[train]``). The bot's runtime never imports this package."""
