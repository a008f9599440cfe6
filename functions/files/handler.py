"""Lambda entry point for files: upload (multipart), list, retrieve, delete and download
(buffered responses, FastAPI through Mangum)."""

from gantry.http.lambda_adapter import observed_handler

handler = observed_handler(["files"])
