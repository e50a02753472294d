"""Bundled conversation flow definitions (YAML)."""
