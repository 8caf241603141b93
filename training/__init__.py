"""Training sera's emotion models (``pip install -e '.[train]'``): ``sera train --model whisper`` (the
default analyzer's, ``whisper_train``) and ``--model cnn`` (the seed paper's CNN, ``train``). The bot's
runtime never imports this package."""
