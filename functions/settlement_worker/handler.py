"""Lambda entry point of the settlement queue: replays the settlements and reservation
releases the meter could not write to DynamoDB. Replaying is idempotent (a settlement's
ledger item is conditional on its request id, a release on its lease), so a message
delivered twice is applied once."""

from gantry.lambda_workers import settlements

handler = settlements
