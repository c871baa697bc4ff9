"""The layer contract (scripts/check_layers.py, run by .ci/run) holds for the package and
fails, naming the file and line, the day an arrow points up, hides behind TYPE_CHECKING,
closes a circle, or a layer below the CLI imports a terminal library."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECK = REPO / "scripts" / "check_layers.py"


def _run(pkg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHECK), str(pkg)], capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def pkg(tmp_path: Path) -> Path:
    dst = tmp_path / "ohpub"
    shutil.copytree(REPO / "ohpub", dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + "\n" + text + "\n")


def test_the_package_keeps_the_contract() -> None:
    res = _run(REPO / "ohpub")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "every arrow points down, no circle" in res.stdout


def test_an_arrow_pointing_up_fails(pkg: Path) -> None:
    _append(pkg / "model" / "units.py", "from ohpub.mirror.run import Mirror  # noqa")
    res = _run(pkg)
    assert res.returncode == 1
    assert "ohpub/model/units.py" in res.stdout
    assert "ohpub.model imports ohpub.mirror.run, a higher layer (ohpub.mirror)" in res.stdout


def test_a_lazy_import_counts(pkg: Path) -> None:
    _append(pkg / "remote" / "http.py", "def _late():\n    from ohpub.cli import render\n")
    res = _run(pkg)
    assert res.returncode == 1
    assert "ohpub.remote imports ohpub.cli.render, a higher layer" in res.stdout


def test_type_checking_imports_are_refused(pkg: Path) -> None:
    _append(
        pkg / "transfer" / "ranges.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from ohpub.transfer.downloader import Downloader\n",
    )
    res = _run(pkg)
    assert res.returncode == 1
    assert "imports ohpub.transfer.downloader under TYPE_CHECKING" in res.stdout
    assert "circle among 2 modules: ohpub.transfer.downloader, ohpub.transfer.ranges" in res.stdout


def test_siblings_of_one_layer_stay_apart(pkg: Path) -> None:
    _append(pkg / "local" / "index.py", "from ohpub.remote import http  # noqa")
    res = _run(pkg)
    assert res.returncode == 1
    assert "ohpub.local imports ohpub.remote.http; they share a layer" in res.stdout


def test_only_the_cli_imports_terminal_libraries(pkg: Path) -> None:
    _append(pkg / "ops" / "status.py", "import rich  # noqa")
    res = _run(pkg)
    assert res.returncode == 1
    assert "ohpub/ops/status.py" in res.stdout and "imports rich; only the CLI may" in res.stdout
