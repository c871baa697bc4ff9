"""Threads and sessions (ARCHITECTURE.md): requests does not promise that one Session is
safe to share between threads, so every thread that makes requests has its own, all
configured alike, all closed with the client; a run under load uses them."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ohpub.remote.client import ApiClient
from tests.helpers import FAST_RETRY, jsonl, run_cli, tree


def test_each_thread_has_its_own_session_configured_alike_and_closed_with_the_client(
    oh_server: Any,
) -> None:
    seen: list[Any] = []
    client = ApiClient(oh_server.base_url)
    hook_calls: list[str] = []
    client.sessions.add_hook(lambda resp, *a, **k: hook_calls.append(resp.url))

    def use() -> None:
        s = client.sessions.get()
        assert client.sessions.get() is s  # one per thread, kept
        seen.append(s)
        client.get_json(client.url("/api/public/projects/"))

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    use()
    assert len({id(s) for s in seen}) == 9  # eight threads and this one
    assert len(hook_calls) == 9  # the --verbose hook is on every thread's session
    for s in seen:
        assert s.headers["User-Agent"] == seen[0].headers["User-Agent"]
        assert s.get_adapter("http://x").max_retries.total == 0  # the Retrier retries
    scoped = client.scoped()
    assert scoped.sessions.get() is client.sessions.get()  # a run's view shares them
    client.close()
    for s in seen:
        for adapter in s.adapters.values():
            assert not adapter.poolmanager.pools  # every connection closed


def test_a_mirror_under_load_with_many_workers_is_exact(oh_server: Any, tmp_path: Path) -> None:
    ids = oh_server.generate(240, 12, 1000, 20_000, project_id=300, seed=11)
    oh_server.faults.latency["storage"] = 0.01
    res = run_cli(
        oh_server,
        ["--api-concurrency", "8", "mirror", str(tmp_path), "-p", "300", "-j", "16", "-f", "jsonl"],
        env=FAST_RETRY,
    )
    assert res.code == 0, res.stderr
    assert sorted(r["id"] for r in jsonl(res.stdout)) == sorted(ids)
    have = tree(tmp_path)
    assert sorted(have.values()) == sorted(oh_server.content(i) for i in ids)
    assert run_cli(oh_server, ["verify", str(tmp_path)]).code == 0
