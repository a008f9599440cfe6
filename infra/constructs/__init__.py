"""Reusable constructs, one per concern (tables, layers, functions, API)."""
