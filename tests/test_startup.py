"""A quick start (issue #20): each command imports only what it needs.

``ohpub -V`` answers without the Typer app; ``help``, ``completion`` and ``status`` build
the app but make no request, so they never load the HTTP stack (requests, urllib3), and
``import ohpub`` loads it only once a function that talks to Open Humans runs. Checked in
a fresh interpreter each time, by what ``sys.modules`` holds afterwards (no timings:
those are in benchmarks/).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO, run_cli

HTTP_STACK = ("requests", "urllib3")
PROBE = """
import contextlib, io, json, sys
sys.argv = ["ohpub", *json.loads(sys.argv[1])]
from ohpub.cli.main import main
out = io.StringIO()
try:
    with contextlib.redirect_stdout(out):
        main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
tops = sorted({m.split(".")[0] for m in sys.modules})
print(json.dumps({"code": code, "stdout": out.getvalue(), "modules": tops}))
"""


def run_fresh(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """``ohpub ARGS`` in a new interpreter: exit code, stdout, top-level modules loaded."""
    res = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout.splitlines()[-1]))


def test_version_needs_neither_the_app_nor_the_http_stack() -> None:
    got = run_fresh(["-V"])
    assert got["code"] == 0 and got["stdout"].startswith("ohpub ")
    loaded = set(got["modules"])
    assert loaded.isdisjoint({*HTTP_STACK, "typer", "rich", "click", "tqdm"}), loaded
    long = run_fresh(["--version"])
    assert long["stdout"] == got["stdout"]


@pytest.mark.parametrize(
    "args", [["completion", "bash"], ["help"], ["help", "mirror"], ["--help"]], ids=" ".join
)
def test_commands_that_make_no_request_do_not_load_the_http_stack(args: list[str]) -> None:
    got = run_fresh(args)
    assert got["code"] == 0 and got["stdout"]
    assert set(got["modules"]).isdisjoint(HTTP_STACK), args


def test_status_of_a_mirror_does_not_load_the_http_stack(oh_server: Any, tmp_path: Path) -> None:
    assert run_cli(oh_server, ["mirror", str(tmp_path), "-p", "102"]).code == 0
    got = run_fresh(["status", str(tmp_path)])
    assert got["code"] == 0 and "files" in got["stdout"]
    assert set(got["modules"]).isdisjoint(HTTP_STACK)


def test_import_ohpub_loads_the_http_stack_only_when_a_request_is_made(oh_server: Any) -> None:
    script = (
        "import json, sys\n"
        "import ohpub\n"
        "names = [getattr(ohpub, n) for n in ohpub.__all__]\n"
        "honest = set(ohpub.__all__) <= set(dir(ohpub))\n"
        "before = sorted(m for m in HTTP_STACK if m in sys.modules)\n"
        "with ohpub.Client(sys.argv[1]) as c:\n"
        "    n = sum(1 for _ in ohpub.projects(client=c))\n"
        "after = sorted(m for m in HTTP_STACK if m in sys.modules)\n"
        "print(json.dumps([before, after, n, honest]))\n"
    ).replace("HTTP_STACK", repr(HTTP_STACK))
    res = subprocess.run(
        [sys.executable, "-c", script, oh_server.base_url],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    before, after, n, honest = json.loads(res.stdout)
    assert before == [] and after == sorted(HTTP_STACK) and n > 0 and honest
