"""Ingest: the canonical event, identity hashing, fan-out to sends, the group writer and the inspector."""
