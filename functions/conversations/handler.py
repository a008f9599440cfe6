"""Lambda entry point for conversations: create, retrieve, delete, and list messages
(buffered, FastAPI through Mangum). Posting a message runs the model, so that route is
served by the streaming completions function."""

from gantry.http.lambda_adapter import observed_handler

handler = observed_handler(["conversations"])
