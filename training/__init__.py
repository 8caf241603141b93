"""Training sera's emotion models (``pip install -e '.[train]'``): one protocol (``protocol``: folds by
speaker, corpora left out, calibration, the record, ``card``), and one learner per model under
``learners/`` (``whisper``, the default analyzer's; ``cnn``, the seed paper's). ``sera train --model
NAME`` (``cli``) runs them. The bot's runtime never imports this package."""
