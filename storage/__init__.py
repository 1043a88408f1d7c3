"""Storage around the tables: the registry of every store, retention and erasure over it, schema migrations."""
