"""Lambda entry point of the training queue: runs the fine-tuning state machine's callback
steps (validate, train, evaluate) and answers their task tokens."""

from gantry.lambda_workers import training

handler = training
