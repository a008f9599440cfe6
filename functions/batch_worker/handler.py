"""Lambda entry point of the batch queue: runs the batch state machine's callback steps
(validate, one chunk of requests, finalize) through the app in-process and answers their
task tokens. Its small reserved concurrency keeps batch work behind interactive traffic."""

from gantry.lambda_workers import batches

handler = batches
