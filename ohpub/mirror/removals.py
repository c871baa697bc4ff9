"""The end of a run whose listing was complete: files upstream no longer has, and
partial downloads that will never finish.

Files that vanished from a complete listing of their scope are kept and marked
removed-upstream, or deleted with ``--delete`` (unless the listing shrank so much that
it looks like an upstream hiccup: ``plan.shrink_refusal``). That applies only to files
that were placed: a record of a file that never reached its path (listed by a run that
failed, or waiting for a complete listing) is simply forgotten, with its partial.
Partial downloads are dropped only for files of this run's own scope: another scope's
partials resume when it runs.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ohpub.local.state import FileState, partial_dir
from ohpub.local.tree import forget_partial
from ohpub.mirror.commit import Phase, record_of
from ohpub.mirror.types import FileResult, MirrorSummary
from ohpub.model import plan
from ohpub.model.records import Action, StateStatus


class Removals(Phase):
    """Marks, deletes (or, dry, reports) what a complete listing no longer has."""

    refused = False
    """True when --delete was refused (the run then exits 1)."""

    def run(self, summary: MirrorSummary) -> None:
        """Files a complete listing of this scope no longer has: keep (mark), or --delete."""
        state = self.state
        if state is None:
            return
        unlisted = [fid for fid, _, _ in state.iter_paths() if fid not in self.listed.ids]
        gone: list[FileState] = []
        for i in range(0, len(unlisted), 500):
            for fs in state.get_many(unlisted[i : i + 500]).values():
                rec = record_of(fs)
                if rec is not None and self.opts.flt.matches(rec):
                    gone.append(fs)
        gone.sort(key=lambda fs: fs.id)
        never = [fs for fs in gone if not (fs.path and StateStatus(fs.status) in plan.PLACED)]
        gone = [fs for fs in gone if fs.path and StateStatus(fs.status) in plan.PLACED]
        if never and not self.dry:
            for fs in never:  # nothing of theirs is on disk but maybe a partial
                forget_partial(partial_dir(self.dest) / str(fs.id), root=self.dest)
                state.delete(fs.id)
        refusal = plan.shrink_refusal(
            len(gone), len(self.listed) + len(gone), delete=self.opts.delete
        )
        if refusal:
            self.refused = True
            summary.warnings.append(refusal)
        for fs in gone:
            self._remove(fs, plan.removal_action(delete=self.opts.delete, refused=bool(refusal)))

    def _remove(self, fs: FileState, action: Action) -> None:
        status = plan.DRY_STATUS[action]
        if not self.dry and self.state is not None:
            if action is Action.DELETE:
                if fs.path:
                    self.target.remove(fs.path)
                    self.target.prune(fs.path)
                self.state.delete(fs.id)
            else:
                new = plan.removed_status(StateStatus(fs.status), has_path=bool(fs.path))
                if new.value != fs.status:
                    fs.status = new.value
                    self.state.put(fs)
        self.report(
            FileResult(fs.id, Path(fs.path) if fs.path else None, status, fs.size, fs.sha256)
        )

    def clean_partials(self) -> None:
        """Partials of files this scope's complete listing no longer has will never finish;
        partials of other scopes' files resume when those scopes run."""
        if self.dry or self.state is None:
            return
        pdir = partial_dir(self.dest)
        with contextlib.suppress(OSError):
            for entry in os.scandir(pdir):
                stem = entry.name.split(".", 1)[0]
                if not stem.isdigit() or int(stem) in self.listed.ids:
                    continue
                fs = self.state.get(int(stem))
                rec = record_of(fs) if fs is not None else None
                in_scope = rec is not None and self.opts.flt.matches(rec)
                if plan.partial_is_stale(in_scope, listed=False, complete=True):
                    forget_partial(pdir / stem, root=self.dest)  # no symlink followed


__all__ = ["Removals"]
