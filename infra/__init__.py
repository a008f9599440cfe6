"""Gantry's AWS CDK app: stacks, constructs and the settings they share."""
