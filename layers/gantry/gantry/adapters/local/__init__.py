"""Embedded models that run in-process with the standard library only (see `provider`)."""
