"""Lambda entry point of the webhook queue (fan-out and signed deliveries with retries) and
of the scheduled relay of quota events."""

from gantry.lambda_workers import webhooks

handler = webhooks
