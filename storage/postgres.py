"""PostgreSQL connections that outlive the server going away (a restart, a failover, a cut network).

psycopg2 marks a connection closed once a statement finds the server gone, but peewee went on handing that
connection to its thread, so every later statement of the thread failed with "connection already closed" until
the process restarted: the ingest writer's, the dispatcher's drains'. Here a connection found closed is let go
at its thread's next statement outside a transaction, and a new one opened. A statement that found it gone, outside
a transaction, is run once more on the new one: nothing of it ran on the old, and outside a transaction it is a
read or a BEGIN (every write runs in a transaction, models.writing). In a transaction the connection's loss is the
transaction's failure: the statements before would be lost with it.

`postgresql://` and `postgresql+pool://` URLs (and their `postgres` spellings) get these classes from
`playhouse.db_url.connect`.
"""
from __future__ import annotations

from peewee import InterfaceError, OperationalError, PostgresqlDatabase
from playhouse.db_url import register_database
from playhouse.pool import PooledPostgresqlDatabase

_LOST = (OperationalError, InterfaceError)


class _Reconnecting:
    """Every statement asks `is_closed()` before it takes its thread's connection: a dropped one answers yes."""

    def is_closed(self) -> bool:
        state = self._state
        if not state.closed and self._dropped() and not self.in_transaction():
            self.close()  # a pool discards it rather than handing it out again
        return state.closed

    def _dropped(self) -> bool:
        return bool(getattr(self._state.conn, "closed", False))

    def execute_sql(self, sql, params=None):
        return self._again_if_dropped(super().execute_sql, sql, params)

    def begin(self, *args, **kwargs):
        return self._again_if_dropped(super().begin, *args, **kwargs)

    def _again_if_dropped(self, call, *args, **kwargs):
        try:
            return call(*args, **kwargs)
        except _LOST:
            if self.in_transaction() or not self._dropped():
                raise
            return call(*args, **kwargs)


class ReconnectingPostgresqlDatabase(_Reconnecting, PostgresqlDatabase):
    pass


class ReconnectingPooledPostgresqlDatabase(_Reconnecting, PooledPostgresqlDatabase):
    pass


register_database(ReconnectingPostgresqlDatabase, "postgres", "postgresql")
register_database(ReconnectingPooledPostgresqlDatabase, "postgres+pool", "postgresql+pool")
