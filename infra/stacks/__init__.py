"""The deployable stacks."""
