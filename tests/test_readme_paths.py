"""The README's paths, run as written (issue 21): the nightly-mirror install line and the
cron recipe in cron's own environment, bash completion in a bash without the
bash-completion package, and the examples that drifted from the real output."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ohpub.model.config import Config
from ohpub.model.version import __version__
from tests.helpers import FAST_RETRY, run_cli

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def _block(after: str, lang: str) -> str:
    """The first ``lang`` code block after the line ``after``."""
    m = re.search(re.escape(after) + r".*?```" + lang + r"\n(.*?)```", README, re.S)
    assert m, f"no {lang} block after {after!r}"
    return m.group(1)


def _installed(home: Path) -> Path:
    """ohpub installed where the README puts it (~/.local/bin), as a console script does:
    a script with its interpreter's full path, needing nothing from the environment."""
    script = home / ".local" / "bin" / "ohpub"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(f'#!/bin/sh\nPYTHONPATH="{REPO}" exec "{sys.executable}" -m ohpub "$@"\n')
    script.chmod(0o755)
    return script


def _fake_crontab(bindir: Path, table: Path) -> None:
    """``crontab -l`` prints the table (exit 1 with none yet), ``crontab -`` replaces it."""
    bindir.mkdir(parents=True, exist_ok=True)
    tool = bindir / "crontab"
    none = '{ echo "no crontab" >&2; exit 1; }'
    tool.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = -l ]; then cat "{table}" 2>/dev/null || {none}\n'
        f'else cat > "{table}"; fi\n'
    )
    tool.chmod(0o755)


def _cron(command: str, home: Path, server: Any) -> subprocess.CompletedProcess[str]:
    """``command`` as cron runs it: /bin/sh, PATH=/usr/bin:/bin and nothing else but HOME
    and the base URL (a crontab's own ``OHPUB_BASE_URL=...`` line)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "OHPUB_BASE_URL": server.base_url}
    return subprocess.run(
        ["env", "-i", *(f"{k}={v}" for k, v in env.items()), "/bin/sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _crontab_commands(table: str) -> list[str]:
    return [
        line.split(None, 5)[5]
        for line in table.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_the_nightly_mirror_installs_and_runs_as_cron_runs_it(oh176: Any, tmp_path: Path) -> None:
    home, dest = tmp_path / "home", tmp_path / "data"
    ohpub = _installed(home)
    _fake_crontab(tmp_path / "bin", tmp_path / "crontab")
    setup = _block("## Set up a nightly mirror", "sh").replace("/data/oh", str(dest / "oh"))
    dest.mkdir()
    user = {
        **os.environ,
        "HOME": str(home),
        "PATH": f"{tmp_path / 'bin'}:{ohpub.parent}:/usr/bin:/bin",
        "OHPUB_BASE_URL": oh176.base_url,
    }
    res = subprocess.run(["bash", "-c", setup], env=user, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    (command,) = _crontab_commands((tmp_path / "crontab").read_text())
    assert command.startswith(f"{ohpub} "), command  # the full path, written at install
    # Cron's PATH has no ~/.local/bin: the old line's bare 'ohpub' is not found there.
    assert _cron("ohpub -V", home, oh176).returncode == 127
    night = _cron(command, home, oh176)
    assert (night.returncode, night.stdout, night.stderr) == (0, "", "")  # no mail
    log = (dest / "oh.log").read_text()
    assert " INFO 31 files: 0 downloaded (0 B), 31 unchanged, 0 failed in " in log
    assert log.rstrip().endswith(" INFO exit 0")


def test_the_cron_recipe_runs_as_written_and_the_monitor_keeps_the_reason(
    oh176: Any, tmp_path: Path
) -> None:
    home, dest = tmp_path / "home", tmp_path / "data"
    dest.mkdir()
    ohpub = _installed(home)
    table = _block("## Cron recipe", "cron")
    table = table.replace("/home/me/.local/bin/ohpub", str(ohpub)).replace("/data", str(dest))
    mirror, monitor = _crontab_commands(table)
    assert "status" in monitor and "--max-age" in monitor and "> /dev/null" in monitor
    first = _cron(mirror, home, oh176)
    assert first.returncode == 0 and first.stdout + first.stderr == "", first.stderr
    fine = _cron(monitor, home, oh176)
    assert (fine.returncode, fine.stdout + fine.stderr) == (0, "")
    # A failed night: one file's storage answers 503 until ohpub gives up on it.
    (dest / "oh/benc/176/spotify-listening-archive.json").unlink()
    oh176.faults.script(
        role="storage", path_regex=oh176.file(57602983).storage_uuid, statuses=[503] * 8
    )
    failed = subprocess.run(
        ["env", "-i", "PATH=/usr/bin:/bin", f"HOME={home}", f"OHPUB_BASE_URL={oh176.base_url}"]
        + [f"{k}={v}" for k, v in FAST_RETRY.items()]
        + ["/bin/sh", "-c", mirror],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode == 1
    mail = failed.stderr.splitlines()
    assert mail[0].startswith("ohpub: error: benc/176/spotify-listening-archive.json: ")
    assert mail[-1].startswith("ohpub: error: mirror incomplete: 31 files: ")
    stale = _cron(monitor, home, oh176)
    assert stale.returncode == 1 and stale.stdout == ""
    assert stale.stderr.startswith(f"ohpub: error: {dest}/oh is stale: the last mirror run failed")
    assert f"first error: {mail[0].removeprefix('ohpub: error: ')}" in stale.stderr
    log = (dest / "oh.log").read_text()
    assert f" ERROR {stale.stderr.removeprefix('ohpub: error: ').strip()}" in log


def test_bash_completion_works_without_the_bash_completion_package(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    ohpub = _installed(home)
    install = _block("## Shell completion", "sh").split("# zsh")[0]
    env = {**os.environ, "HOME": str(home), "PATH": f"{ohpub.parent}:/usr/bin:/bin"}
    res = subprocess.run(["bash", "-c", install], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    probe = (
        'source "$HOME/.bashrc"; complete -p ohpub >/dev/null || exit 9; '
        'COMP_WORDS=(ohpub mir); COMP_CWORD=1; _ohpub; printf "%s\\n" "${COMPREPLY[@]}"; '
        'COMP_WORDS=(ohpub list --for); COMP_CWORD=2; _ohpub; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    # --norc --noprofile: nothing of the system's (no bash-completion), only that line.
    res = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", probe], env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["mirror", "--format"], res.stdout


# -- examples that drifted from the real output ---------------------------------------------------


def test_retry_examples_say_what_a_retry_line_says() -> None:
    retries = Config().retry.attempts - 1
    shown = re.findall(r"retry (\d+) of (\d+) in [\d.]+ s", README)
    assert shown and all(int(of) == retries for _, of in shown), shown


def test_fetch_to_stdout_example_is_the_real_output(oh176: Any) -> None:
    m = re.search(r"\$ ohpub fetch (\d+) -o - \| sha256sum\n(ohpub: .*)\n([0-9a-f]{64})  -", README)
    assert m, "the README lost its 'fetch -o -' example"
    res = run_cli(oh176, ["fetch", m.group(1), "-o", "-"])
    assert res.code == 0
    assert res.stderr.rstrip("\n") == m.group(2)
    assert hashlib.sha256(res.stdout_bytes).hexdigest() == m.group(3)


def test_log_examples_are_this_version_and_name_the_listing() -> None:
    starts = re.findall(r" INFO start \(ohpub ([^,)]+), server [^)]+\): ohpub ", README)
    assert starts and set(starts) == {__version__}, starts
    assert re.search(r" INFO listing done: \d+ files, complete, 1 request", README)
    for stage in ("A good night", "A failed night", "A stale mirror"):
        assert f"**{stage}" in README, stage


def _slug(title: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", title.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def test_every_readme_anchor_has_its_heading() -> None:
    headings = {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", README, re.M)}
    links = set(re.findall(r"\]\(#([^)]+)\)", README))
    assert links and not links - headings, links - headings


@pytest.mark.parametrize("word", ["retry 2 of 6", "(ohpub 0.1.0)", "#what-resumes"])
def test_the_drift_the_issue_found_is_gone(word: str) -> None:
    if word == "#what-resumes":  # the link may stay: what matters is that it resolves
        assert "### What resumes" in README
        return
    assert word not in README
