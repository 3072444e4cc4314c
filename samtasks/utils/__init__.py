"""Helpers shared by the predictor, the adapters and the CLI, one module per concern."""
