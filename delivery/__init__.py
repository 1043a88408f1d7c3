"""Delivery: the dispatcher and the storage verbs of send rows (claim, record, pause, replay)."""
