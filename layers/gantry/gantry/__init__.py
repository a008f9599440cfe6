"""Gantry: a serverless, OpenAI-compatible AI API platform."""

__version__ = "0.1.0"
