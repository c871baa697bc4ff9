"""A plain client fetching a list of listing URLs: what the listing alone costs.

    python benchmarks/listing_alone.py --concurrency A URLS_FILE

The first URL alone (a client must read the first page to learn the count), then the rest
at most ``A`` in flight (ohpub's limit on Open Humans), each body read and parsed as JSON,
nothing else. Trusts ``REQUESTS_CA_BUNDLE`` like any requests client. Exit 1 if any page
failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import requests

_local = threading.local()


def _get(url: str) -> int:
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
        session.headers["Accept"] = "application/json"
    resp = session.get(url, timeout=120)
    resp.raise_for_status()
    return len(json.loads(resp.content).get("results", []))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("urls", help="file with one URL per line")
    args = p.parse_args()
    with open(args.urls) as fh:
        urls = [line.strip() for line in fh if line.strip()]
    if not urls:
        return 0
    items = _get(urls[0])
    with ThreadPoolExecutor(max(1, args.concurrency)) as pool:
        items += sum(pool.map(_get, urls[1:]))
    print(f"{len(urls)} pages, {items} items", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
