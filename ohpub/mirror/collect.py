"""The work of one run handed out, collected, and committed a batch at a time.

``mirror.run._Run`` plans the listing and hands each file's work to ``Collector.submit``;
the workers (``mirror.work.Worker``, on pool threads) hand back a ``Finished`` through a
queue that only the main thread reads. ``Collector.drain`` takes what finished: a re-hash's
verdict (keep the file, or download it now), or a result to place. Finished files are
placed by ``commit.Committer.place`` a batch at a time once every path is fixed
(``Listed.targets_ready``); before that they wait in ``Listed``'s stash on disk, not in
memory (a seed run finishes many before its listing ends).

Only the main thread calls this class: it alone writes the tree and the state. Every wait
is on the run's cancel token, and every batch is placed ``shielded`` (a signal never cuts
it between the renames and the state transaction that records them).
"""

from __future__ import annotations

import queue
from concurrent.futures import Future

from ohpub.mirror.commit import Committer
from ohpub.mirror.listed import Listed
from ohpub.mirror.types import Events, Finished, MirrorSummary, WorkItem
from ohpub.mirror.work import Worker
from ohpub.model.cancel import Cancelled, CancelToken, DaemonPool, shielded
from ohpub.model.records import Action

BATCH = 64
"""Finished files committed together (renames, then one fsync per directory and one state
transaction). A crash loses at most the files of the batch in flight (re-downloaded)."""


class Collector:
    """Work in flight and finished work of one run, up to its placing (module docstring)."""

    def __init__(
        self,
        worker: Worker,
        listed: Listed,
        commit: Committer,
        events: Events,
        summary: MirrorSummary,
        cancel: CancelToken,
    ) -> None:
        self.worker = worker
        self.listed = listed
        self.commit = commit
        self.events = events
        self.summary = summary
        self.cancel = cancel
        self._done: queue.SimpleQueue[Future[Finished]] = queue.SimpleQueue()
        self.in_flight = 0
        """Work handed out and not yet collected."""
        self._rehashing = 0
        self._finished: list[Finished] = []

    def submit(self, pool: DaemonPool, item: WorkItem) -> None:
        """Hand one file's work to the workers."""
        fut = pool.submit(self.worker.run, item)
        fut.add_done_callback(self._done.put)
        self.in_flight += 1
        if item.action is Action.REHASH:
            self._rehashing += 1

    def drain(self, pool: DaemonPool, *, until: int, only_rehash: bool = False) -> None:
        """Collect finished work until at most ``until`` items are in flight (waiting as
        needed), then whatever else is done; with ``only_rehash``, wait only while a
        re-hash is outstanding (its verdict decides whether a file moves or downloads).
        Once paths are fixed, what was collected is committed at once, a batch at a time,
        so results appear as files finish."""
        while self.in_flight > until and (self._rehashing or not only_rehash):
            fut = self.cancel.get(self._done)
            self._collect(pool, fut)
            self._collect_ready(pool)
            if self.listed.targets_ready:
                self.commit_finished()
        self._collect_ready(pool)

    def _collect_ready(self, pool: DaemonPool) -> None:
        """Whatever else is done, without waiting (at most a batch)."""
        for _ in range(BATCH):
            try:
                fut = self._done.get_nowait()
            except queue.Empty:
                return
            self._collect(pool, fut)

    def _collect(self, pool: DaemonPool, fut: Future[Finished]) -> None:
        """One finished work item: a verdict to act on, or a result to commit."""
        self.in_flight -= 1
        if fut.cancelled() or isinstance(fut.exception(), Cancelled):
            return
        done = fut.result()  # a programming error inside a worker surfaces here
        if done.was is Action.REHASH:
            self._rehashing -= 1
            if done.next is not None:
                self.submit(pool, done.next)  # other bytes on disk: download now
                return
            if done.action is Action.KEEP:
                self.listed.set_action(done.id, Action.KEEP, done.size)
                self.commit.refresh_fingerprint(done)
                self.events.kept(1)
                return
        self.add_finished(done)

    def add_finished(self, done: Finished) -> None:
        """A file ready to place: placed with its batch once paths are fixed, stashed on
        disk until then."""
        self._finished.append(done)
        if len(self._finished) >= BATCH:
            if self.listed.targets_ready:
                self.commit_finished()
            else:
                self.listed.stash(self._finished)  # not in memory: a seed run has many
                self._finished = []

    def commit_finished(self) -> None:
        """Place what finished: first what waited for the listing, then the rest; a batch
        at a time, each whole (``shielded``), the token checked between batches."""
        for batch in self.listed.stashed(BATCH):
            self._place(batch)
        batch, self._finished = self._finished, []
        for i in range(0, len(batch), BATCH):
            self._place(batch[i : i + BATCH])

    def _place(self, batch: list[Finished]) -> None:
        self.cancel.check()
        with shielded():
            self.commit.place(batch, self.summary)


__all__ = ["BATCH", "Collector"]
