"""Training, evaluation and export of the models served from ``model_store``."""
