#!/bin/sh
# Started by the Lambda Web Adapter (AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap), which proxies
# each invocation to this server and streams the response back (AWS_LWA_INVOKE_MODE).
export PYTHONPATH="/opt/python:${LAMBDA_TASK_ROOT}:${PYTHONPATH}"
exec python -m uvicorn --factory app:build \
  --host 127.0.0.1 --port "${PORT:-8080}" \
  --no-access-log --log-level warning --timeout-keep-alive 75
