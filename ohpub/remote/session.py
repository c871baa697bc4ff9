"""The HTTP session of every request: requests', with the environment read once per host.

With ``trust_env`` on, requests reads the environment on every request: the proxy
variables (a scan of the whole environment, and again for an answer that redirects, such
as the download view's 302, even when the redirect is not followed), ``no_proxy``
matching, the CA bundle variables and ``~/.netrc``. On a mirror of small files that was
about a fifth of ohpub's Python time (py-spy ``--gil``, 600 files at 30 ms), on the
threads that keep the Open Humans slots busy. ``EnvOnceSession`` turns that off and
applies the same settings itself, worked out once per scheme and host: the proxies
``requests.utils.get_environ_proxies`` gives (``NO_PROXY`` honoured per host),
``REQUESTS_CA_BUNDLE`` or else ``CURL_CA_BUNDLE`` for verification, and the host's netrc
credentials, if any. The environment is read when the session is made (a change in the
middle of a run is not seen); a redirect that requests follows by itself keeps the
settings of the host it came from (ohpub follows storage redirects by hand, each hop with
its own host's).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.utils import get_environ_proxies, get_netrc_auth


class EnvOnceSession(requests.Session):
    """A ``requests.Session`` that reads the environment once per host (see above)."""

    def __init__(self) -> None:
        super().__init__()
        self.trust_env = False
        self.bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        self._hosts: dict[tuple[str, str], tuple[dict[str, str], Any]] = {}

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> requests.Response:
        proxies, auth = self.for_host(str(url))
        if kwargs.get("proxies") is None:
            kwargs["proxies"] = dict(proxies)
        if auth is not None and kwargs.get("auth") is None and self.auth is None:
            kwargs["auth"] = auth
        if kwargs.get("verify") is None and self.verify is True and self.bundle:
            kwargs["verify"] = self.bundle
        return super().request(method, url, *args, **kwargs)

    def for_host(self, url: str) -> tuple[dict[str, str], Any]:
        """(proxies, netrc credentials) for the scheme and host of ``url``, as requests'
        ``trust_env`` would find them, looked up once."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        found = self._hosts.get(key)
        if found is None:
            found = (get_environ_proxies(url), get_netrc_auth(url))
            self._hosts[key] = found
        return found


__all__ = ["EnvOnceSession"]
