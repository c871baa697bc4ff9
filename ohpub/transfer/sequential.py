"""One stream: open, check the answer, pump the body, verify; the loop every transfer
starts with, and the one a parallel transfer falls back to. A big file's stream is
watched by a ``SplitProbe`` and handed on to parallel ranges, mid-body, when the probe's
measurement says more connections would finish it sooner (``transfer.decide``)."""

from __future__ import annotations

import logging

from ohpub.model.errors import ChecksumError, ServerError
from ohpub.remote import http
from ohpub.remote.http import Failure, failure_of
from ohpub.transfer.decide import SplitProbe, block_size
from ohpub.transfer.job import SMALL_OBJECT, Downloaded, Job, Lanes, TooLargeError, pump, save_meta
from ohpub.transfer.storage import MD5_ETAG, Answer, open_answer, storage_retrier

log = logging.getLogger("ohpub")


class Sequential:
    """The transfer loop over one connection at a time: open, check, pump, verify."""

    def __init__(self, downloader: Lanes, job: Job, *, parallel: bool = True) -> None:
        self.d = downloader
        self.job = job
        self.parallel = parallel
        self.retry = storage_retrier(downloader.retry, job.f, downloader.cancel)

    def run(self) -> Downloaded | None:
        """The finished download, or None when the caller should go parallel
        (``self.handoff`` then holds the open answer, read up to the sink's offset)."""
        job, started_at = self.job, self.job.sink.offset
        job.resumed = started_at > 0
        self.handoff: Answer | None = None
        while True:
            answer = open_answer(job.source, job.headers(), self.retry, self.d.slots)
            try:
                outcome = self._read(answer)
            except http.TRANSPORT_ERRORS as exc:
                answer.close()
                self.retry.wait(failure_of(exc), answer.resp.url)
                continue
            except BaseException:
                answer.close()
                raise
            if outcome == "ranged":
                self.handoff = answer
                return None
            answer.close()
            if outcome == "retry":
                continue
            if self._verified():
                return job.result(started_at)

    def _read(self, answer: Answer) -> str:
        """Check one answer and read its body: "done", "retry" or "ranged"."""
        job, sink = self.job, self.job.sink
        if answer.status == 416:
            return self._range_not_satisfiable(answer)
        if answer.status == 200 and sink.offset:
            log.debug("file %s: server sent the whole object; restarting", job.f.id)
            job.restart()
        elif answer.status == 206 and answer.first != sink.offset:
            raise ServerError(
                f"file {job.f.id}: storage sent a Content-Range that does not continue "
                f"at byte {sink.offset}"
            )
        job.total = answer.total
        if job.max_size is not None and job.total is not None and job.total > job.max_size:
            raise TooLargeError(job.f.id, job.total, job.max_size)
        if job.on_total is not None and job.total is not None:
            announce, job.on_total = job.on_total, None
            announce(job.total)
        if answer.etag and answer.etag != job.etag:
            job.etag = answer.etag
            if job.meta_path is not None and (job.total is None or job.total > SMALL_OBJECT):
                save_meta(job.meta_path, job.f.id, job.etag, job.total)
        sink.digests.expect(job.total)
        sink.ensure_hashed()
        probe = None
        if self.parallel and self.d.may_split(job, answer) and job.total is not None:
            left = job.total - sink.offset
            block = block_size(job.total, self.d.config.range_size)
            probe = SplitProbe(job.f.id, left, min(self.d.width, -(-left // block)))
        if not pump(answer.resp, sink, self.retry, job.total, self._got, probe):
            answer.consumed = sink.offset - answer.first
            return "ranged"
        if job.total is not None and sink.offset < job.total:
            at = f"at byte {sink.offset} of {job.total}"
            self.retry.wait(Failure(f"connection broken mid-body ({at})"))
            return "retry"
        if job.total is not None and sink.offset > job.total:
            raise ServerError(f"file {job.f.id}: storage sent more bytes than it announced")
        return "done"

    def _got(self, n: int) -> None:
        self.job.transferred += n
        self.job.progress(n)

    def _range_not_satisfiable(self, answer: Answer) -> str:
        job, sink = self.job, self.job.sink
        if answer.total is not None and answer.total == sink.offset and job.etag:
            job.total = answer.total
            return "done"  # the partial is complete; _verified checks its bytes
        job.restart()
        job.etag = None
        self.retry.wait(Failure("416 range not satisfiable; restarting"))
        return "retry"

    def _verified(self) -> bool:
        """The ETag of a single-part upload is the MD5 of the bytes: check it."""
        job, sink = self.job, self.job.sink
        sink.ensure_hashed()
        _sha, md5 = sink.digests.hexdigests()
        if not (job.etag and MD5_ETAG.match(job.etag) and md5 != job.etag):
            return True
        job.checksum_retries += 1
        if job.checksum_retries > 1 or not sink.restartable:
            raise ChecksumError(
                f"file {job.f.id} ({job.f.basename}): checksum mismatch "
                f"(md5 {md5}, storage ETag {job.etag}); not saved"
            )
        log.debug("file %s: md5 mismatch, downloading again from the start", job.f.id)
        job.restart()
        return False
