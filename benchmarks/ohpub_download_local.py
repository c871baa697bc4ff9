"""Run open-humans-api's ``ohpub-download`` against a local server.

``ohapi/public.py`` hard-codes ``BASE_URL = 'https://www.openhumans.org'`` and builds
``BASE_URL_API = BASE_URL + '/api/public-data/'`` at import; ``download()`` reads the module
global ``BASE_URL_API`` when it runs, and ``OHAPI_OH_BASE_URL`` (ohapi/api.py) does not reach
it. So this wrapper patches that one constant after import and then calls the package's own
click entry point unchanged: ``--base-url URL`` (ours) followed by ohpub-download's options.
The download URLs come from the listing, so they already point at the local server.
Run it with the peer venv's python (benchmarks/work/peer-venv), never ohpub's.
"""

from __future__ import annotations

import sys


def main() -> None:
    argv = sys.argv[1:]
    if len(argv) < 2 or argv[0] != "--base-url":
        sys.exit("usage: ohpub_download_local.py --base-url URL [ohpub-download options]")
    base = argv[1].rstrip("/")
    import ohapi.public
    from ohapi.command_line import public_data_download_cli

    ohapi.public.BASE_URL = base
    ohapi.public.BASE_URL_API = f"{base}/api/public-data/"
    sys.argv = ["ohpub-download", *argv[2:]]
    public_data_download_cli()


if __name__ == "__main__":
    main()
