"""The executor: re-checks and executes actions (margin calls, their resolution,
liquidations), delivers webhooks, and applies account events."""
