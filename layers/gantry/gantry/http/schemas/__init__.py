"""Request and response shapes on the wire (OpenAI-compatible where OpenAI has the concept)."""
