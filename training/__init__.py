"""Training, evaluation and export of the sentiment model."""
