"""Group commit (docs/performance.md): many requests' writes in one transaction, each caller answered once it committed.

SQLite has one writer, and a commit costs far more than the rows before it. So each process has one
writer thread, started on first use. It begins a transaction (which may first wait its turn behind
the box's other writers), takes every item queued by then, writes them all with one call of its
`write` function, commits, and only then wakes their callers. Under load the next group gathers
while one is written; alone, an item is its own group. If a group fails it is rolled back and written
again one item per transaction, so only the bad item's caller gets the error.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
from typing import Callable, ContextManager, Generic, TypeVar

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")
MAX_GROUP = 256  # items per transaction at most: a bigger group holds SQLite's write lock longer


class _Ticket:
    """One caller's item, and what became of it."""

    __slots__ = ("item", "done", "result", "error")

    def __init__(self, item):
        self.item = item
        self.done = threading.Event()
        self.result = None
        self.error: Exception | None = None


class GroupWriter(Generic[Item, Result]):
    """Writes items on this process's writer thread, a group per `transaction()`: `write(items)` -> a result each."""

    def __init__(self, database, write: Callable[[list[Item]], list[Result]],
                 transaction: Callable[[], ContextManager] | None = None, max_group: int = MAX_GROUP):
        self.database = database  # a peewee Database, or the DatabaseProxy bound to one
        self.write = write
        self.transaction = transaction or database.atomic
        self.max_group = max_group
        self._start = threading.Lock()
        self._inbox: queue.SimpleQueue | None = None
        os.register_at_fork(after_in_child=self._forget)  # threads do not survive a fork: the child starts its own

    def run(self, item: Item) -> Result:
        """Write `item` in the writer's next transaction; its result (or its exception) once that has committed.

        Inside a transaction of the caller's own, the item is written right there, to commit or roll back with it.
        """
        if self.database.in_transaction():
            with self.transaction():
                return self.write([item])[0]
        ticket = _Ticket(item)
        self._queue().put(ticket)
        ticket.done.wait()
        if ticket.error is not None:
            raise ticket.error
        return ticket.result

    def waiting(self) -> int:
        """Items queued for the next transaction."""
        return self._inbox.qsize() if self._inbox is not None else 0

    def _queue(self) -> queue.SimpleQueue:
        if self._inbox is None:
            with self._start:
                if self._inbox is None:
                    inbox = queue.SimpleQueue()
                    threading.Thread(target=self._loop, args=(inbox,), name="group-writer", daemon=True).start()
                    self._inbox = inbox
        return self._inbox

    def _forget(self) -> None:
        self._start = threading.Lock()
        self._inbox = None

    def _loop(self, inbox: queue.SimpleQueue) -> None:
        bound = None
        while True:
            group = [inbox.get()]
            try:
                # The database was bound anew (tests do, per app): close this thread's connection to the old one.
                current = getattr(self.database, "obj", self.database)
                if bound is not None and bound is not current:
                    bound.close()
                bound = current
                self._write(group, inbox)
            except Exception as exc:  # noqa: BLE001 - fail these callers; never hang them, never stop the thread
                log.exception("group writer failed")
                for ticket in group:
                    ticket.error = exc
            finally:
                for ticket in group:
                    ticket.done.set()

    def _write(self, group: list[_Ticket], inbox: queue.SimpleQueue | None = None) -> None:
        """Write the group in one transaction; with `inbox`, whatever queued while it waited to begin joins it."""
        try:
            with self.transaction():
                while inbox is not None and len(group) < self.max_group:
                    try:
                        group.append(inbox.get_nowait())
                    except queue.Empty:
                        break
                results = self.write([ticket.item for ticket in group])
        except Exception as exc:  # noqa: BLE001 - handed to the caller, whose request fails as it would alone
            if len(group) == 1:
                group[0].error = exc
                return
            log.debug("group write failed, writing one by one", exc_info=True)
            for ticket in group:  # one bad item must not fail its neighbours
                self._write([ticket])
            return
        for ticket, result in zip(group, results):
            ticket.result = result
