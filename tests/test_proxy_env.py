"""The environment requests would read on every request (proxies, NO_PROXY, the CA bundle)
is read once per host (``remote/session.py``) and still means what it means for any
requests client: a proxy in HTTP_PROXY is used, a host in NO_PROXY bypasses it. (The CA
bundle: tests/test_https.py runs everything through REQUESTS_CA_BUNDLE.)"""

from __future__ import annotations

import socket
from typing import Any

from tests.helpers import FAST_RETRY, run_cli


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_proxy_from_the_environment_is_used_and_no_proxy_bypasses_it(oh_server: Any) -> None:
    proxy = f"http://127.0.0.1:{_dead_port()}"  # nothing listens there
    env = {**FAST_RETRY, "OHPUB_RETRIES": "1", "HTTP_PROXY": proxy, "http_proxy": proxy}
    no_bypass = {**env, "NO_PROXY": "", "no_proxy": ""}
    via_proxy = run_cli(oh_server, ["list", "projects"], env=no_bypass)
    assert via_proxy.code == 1 and "connection refused" in via_proxy.stderr  # the dead proxy
    assert oh_server.count(role="api") == 0
    bypass = {**env, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    direct = run_cli(oh_server, ["list", "projects"], env=bypass)
    assert direct.code == 0, direct.stderr
    assert oh_server.count(role="api") >= 1
