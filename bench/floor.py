"""The floor: a bare FastAPI app returning a fixed chat completion, under the same uvicorn
settings as Gantry. Whatever it serves is the most this machine can do for such a route."""

from __future__ import annotations

import argparse
import json

import uvicorn
from fastapi import FastAPI, Request
from starlette.responses import Response

FIXED = json.dumps(
    {
        "id": "chatcmpl-floor",
        "object": "chat.completion",
        "created": 0,
        "model": "floor",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello there"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6},
    }
).encode()


def create_floor_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def fixed(request: Request) -> Response:
        await request.body()
        return Response(content=FIXED, media_type="application/json")

    @app.get("/health")
    async def health() -> Response:
        return Response(content=b'{"status":"ok"}', media_type="application/json")

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        create_floor_app(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main()
