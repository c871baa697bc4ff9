"""The command line as people meet it: help, environment variables, --quiet/--verbose,
--log-file, tables, the dry-run plan, status, the version and the completion scripts."""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import typer.main

from ohpub.cli.main import app
from ohpub.model.version import __version__
from tests.helpers import FAST_RETRY, content_of, jsonl, run_cli, tree

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")
COMMAND_ORDER = ["list", "mirror", "fetch", "verify", "status", "help", "completion"]


def _group() -> Any:
    return typer.main.get_command(app)


def _commands() -> dict[str, Any]:
    return dict(_group().commands)


# -- help -----------------------------------------------------------------------------------


def test_every_command_and_option_has_help() -> None:
    group = _group()
    assert group.help and "Example" in group.help
    assert sorted(_commands()) == sorted(COMMAND_ORDER)
    for p in group.params:
        assert p.help, f"global option {p.name} has no help"
    for name, cmd in _commands().items():
        assert cmd.help, f"{name} has no help"
        assert cmd.help.strip().splitlines()[0].strip(), f"{name}: no one-line summary"
        assert "Example" in cmd.help, f"{name} --help shows no example"
        for p in cmd.params:
            assert p.help and p.help.strip(), f"{name}: {p.param_type_name} {p.name} has no help"


@pytest.mark.parametrize("cmd", [[], *([c] for c in COMMAND_ORDER)])
def test_help_renders_on_80_columns_with_every_option(cmd: list[str]) -> None:
    res = run_cli(None, [*cmd, "--help"], env={"COLUMNS": "80"})
    assert res.code == 0, res.stderr
    assert "Usage: ohpub" in res.stdout and "Example" in res.stdout
    assert max(len(line) for line in res.stdout.splitlines()) <= 80
    params = _commands()[cmd[0]].params if cmd else _group().params
    for p in params:
        if p.param_type_name == "option" and not p.hidden:
            assert p.opts[0] in res.stdout


def _examples(help_text: str) -> list[str]:
    """The example lines of a help text: the verbatim (\\b) block after "Example"."""
    text = inspect.cleandoc(help_text)
    block = text.split("Example", 1)[1].split("\b", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in block.strip("\n").splitlines() if line.strip()]


def test_help_examples_run_against_the_local_server(oh176: Any, tmp_path: Path) -> None:
    """Every example of every --help runs as shown (HOME is a scratch directory; a crontab
    line runs its command), in the order a newcomer would read them."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim = bindir / "ohpub"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m ohpub "$@"\n')
    shim.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **os.environ,
        "HOME": str(home),
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(REPO),
        "OHPUB_BASE_URL": oh176.base_url,
        "NO_COLOR": "1",
    }
    # A crontab line runs as cron runs it: its own PATH, HOME, and ohpub by its full path
    # (~/.local/bin/ohpub, where the README installs it).
    installed = home / ".local" / "bin" / "ohpub"
    installed.parent.mkdir(parents=True)
    installed.write_text(
        f'#!/bin/sh\nPYTHONPATH="{REPO}" exec "{sys.executable}" -m ohpub "$@"\n'
    )
    installed.chmod(0o755)
    cron_env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "OHPUB_BASE_URL": oh176.base_url}
    if shutil.which("jq", path=env["PATH"]) is None:
        pytest.skip("jq is not installed")
    helps = [_group().help] + [_commands()[c].help for c in COMMAND_ORDER]
    ran = 0
    for help_text in helps:
        examples = _examples(help_text)
        assert 2 <= len([e for e in examples if not e.startswith("#")]) <= 4, examples
        for line in examples:
            if line.startswith("#"):
                continue
            cron = re.fullmatch(r"(?:\S+\s+){5}(\S*ohpub .*)", line)
            command = cron.group(1) if cron else line
            assert command.startswith("ohpub ") or cron, line
            res = subprocess.run(
                ["bash", "-o", "pipefail", "-c", command] if not cron else ["sh", "-c", command],
                cwd=home,
                env=env if not cron else cron_env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert res.returncode == 0, f"{line}\n{res.stderr}"
            assert "error" not in res.stderr, f"{line}\n{res.stderr}"
            ran += 1
    assert ran >= 12
    assert (home / "spotify" / "index.jsonl").exists()
    assert "INFO exit 0" in (home / "oh.log").read_text()


def test_examples_from_the_issue_are_in_the_help() -> None:
    text = "\n".join([_group().help] + [c.help for c in _commands().values()])
    assert "| jq -r '[.id, .basename] | @tsv'" in text  # a project's files: id and basename
    assert "--tag spotify -f jsonl | jq -r .download_url" in text  # the URLs of one tag
    assert re.search(r"^\s*17 3 \* \* \* ~/.local/bin/ohpub .*--log-file", text, re.M)  # cron
    assert "--max-age 26h" in text  # monitoring


# -- environment variables ----------------------------------------------------------------------


def _expected_envvar(command: str | None, p: Any) -> str | None:
    if p.param_type_name == "argument":
        return "OHPUB_DEST" if p.name == "dest" else None
    if p.name in ("version", "command", "shell", "old_limit"):  # old_limit: list -n, deprecated
        return None
    long = next(o for o in p.opts if o.startswith("--"))
    if long == "--format":
        assert command is not None
        return f"OHPUB_{command.upper()}_FORMAT"
    return "OHPUB_" + long[2:].upper().replace("-", "_")


def _all_params() -> list[tuple[str | None, Any]]:
    out: list[tuple[str | None, Any]] = [(None, p) for p in _group().params]
    for name, cmd in _commands().items():
        out += [(name, p) for p in cmd.params]
    return out


def test_every_option_has_its_env_var_and_the_readme_names_it() -> None:
    for command, p in _all_params():
        expected = _expected_envvar(command, p)
        assert p.envvar == expected, f"{command} {p.name}: {p.envvar} != {expected}"
        if expected and not p.hidden:
            assert expected in README, f"README does not document {expected}"
    # The rule itself is in the README.
    assert "OHPUB_<OPTION>" in README


def test_env_vars_set_options(oh_server: Any) -> None:
    res = run_cli(oh_server, ["list"], env={"OHPUB_PROJECT": "102 128", "OHPUB_LIST_FORMAT": "csv"})
    assert res.code == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("id,basename,")
    assert sorted(int(line.split(",")[0]) for line in lines[1:]) == [1, 2, 3, 4, 5, 6]
    res = run_cli(oh_server, ["list", "-p", "128"], env={"OHPUB_LIMIT": "1"})
    assert len(jsonl(res.stdout)) == 1
    # The command line beats the environment.
    res = run_cli(oh_server, ["list", "-f", "jsonl"], env={"OHPUB_LIST_FORMAT": "csv"})
    assert json.loads(res.stdout.splitlines()[0])["id"]


def test_bad_env_value_is_a_usage_error_naming_the_variable(oh_server: Any, tmp_path: Path) -> None:
    res = run_cli(oh_server, ["mirror", str(tmp_path), "-p", "102"], env={"OHPUB_JOBS": "0"})
    assert res.code == 2
    assert "OHPUB_JOBS" in res.stderr and res.stderr.startswith("ohpub: error:")


def test_env_filters_do_not_break_listing_projects(oh_server: Any) -> None:
    res = run_cli(oh_server, ["list", "projects"], env={"OHPUB_PROJECT": "102"})
    assert res.code == 0, res.stderr
    assert {p["id"] for p in jsonl(res.stdout)} >= {102, 128}
    res = run_cli(oh_server, ["list", "projects", "-p", "102"])
    assert res.code == 2 and "--project" in res.stderr


def test_env_dest_delete_and_no_delete(oh_server: Any, tmp_path: Path) -> None:
    env = {"OHPUB_DEST": str(tmp_path), "OHPUB_PROJECT": "102", "OHPUB_DELETE": "1"}
    assert run_cli(oh_server, ["mirror"], env=env).code == 0
    oh_server.delete_file(4)
    res = run_cli(oh_server, ["mirror", "--no-delete"], env=env)
    assert res.code == 0, res.stderr
    assert "bob_smith/102/fitbit-data.json" in tree(tmp_path)  # kept: --no-delete won
    res = run_cli(oh_server, ["mirror"], env=env)
    assert "bob_smith/102/fitbit-data.json" not in tree(tmp_path)
    assert "1 deleted" in res.stderr
    assert run_cli(oh_server, ["status"], env=env).code == 0


# -- --quiet, --verbose -------------------------------------------------------------------------


def test_quiet_prints_nothing_on_success(oh_server: Any, tmp_path: Path) -> None:
    res = run_cli(oh_server, ["--quiet", "mirror", str(tmp_path), "-p", "102"])
    assert res.code == 0
    assert res.stdout == "" and res.stderr == ""
    res = run_cli(oh_server, ["mirror", str(tmp_path), "-p", "102"], env={"OHPUB_QUIET": "1"})
    assert res.code == 0 and res.stderr == ""
    res = run_cli(oh_server, ["-q", "verify", str(tmp_path)])
    assert res.code == 0 and res.stderr == "" and res.stdout == ""


def _failing_storage(server: Any) -> None:
    server.faults.script(role="storage", path_regex="taxonomy", statuses=[503] * 50)


def test_quiet_still_prints_errors_and_why_the_run_failed(oh_server: Any, tmp_path: Path) -> None:
    _failing_storage(oh_server)
    env = {**FAST_RETRY, "OHPUB_RETRIES": "2"}
    res = run_cli(oh_server, ["-q", "mirror", str(tmp_path), "-p", "128"], env=env)
    assert res.code == 1
    lines = res.stderr.splitlines()
    assert lines and all(line.startswith("ohpub: error: ") for line in lines), res.stderr
    assert any("bob_smith/128/taxonomy-summary.tsv" in line for line in lines)
    assert "mirror incomplete: 2 files: 1 downloaded" in lines[-1]
    assert "1 failed" in lines[-1]


def test_verbose_logs_each_request_with_keys_redacted(oh_server: Any, tmp_path: Path) -> None:
    res = run_cli(oh_server, ["--verbose", "mirror", str(tmp_path), "-p", "128"])
    assert res.code == 0, res.stderr
    requests = [line for line in res.stderr.splitlines() if re.match(r"ohpub: GET \S+ ", line)]
    assert any(
        "/api/public/project/128/datafiles/" in line and "-> 200" in line for line in requests
    )
    assert sum("/datafile-download/" in line and "-> 302" in line for line in requests) == 2
    assert sum(line.startswith(f"ohpub: GET {oh_server.storage_url}") for line in requests) == 2
    assert "downloaded: alice/128/ag-000001.fastq.gz" in res.stderr
    _assert_redacted(res.stderr)


def _assert_redacted(text: str) -> None:
    secrets = re.findall(r"(?i)\b(key|signature|x-oh-key|awsaccesskeyid)=([^&\s]*)", text)
    assert secrets
    for name, value in secrets:
        assert re.fullmatch(r"[^&\s]{0,4}…", value), f"{name}={value} is not redacted"


def test_verbose_and_quiet(oh_server: Any) -> None:
    res = run_cli(oh_server, ["-v", "-q", "list", "-p", "128"])
    assert res.code == 2 and "exclude each other" in res.stderr
    # The command line beats the environment.
    res = run_cli(oh_server, ["-v", "list", "-p", "128"], env={"OHPUB_QUIET": "1"})
    assert res.code == 0 and "ohpub: GET " in res.stderr
    res = run_cli(oh_server, ["-q", "list", "-p", "128"], env={"OHPUB_VERBOSE": "1"})
    assert res.code == 0 and res.stderr == ""


def test_errors_are_one_line_with_a_hint(oh_server: Any) -> None:
    res = run_cli(oh_server, ["list", "-p", "999"])
    assert res.code == 2
    assert res.stderr.splitlines() == [
        "ohpub: error: project 999 not found; 'ohpub list projects' shows the public projects"
    ]
    assert "\x1b" not in res.stderr  # not a terminal


# -- --log-file ---------------------------------------------------------------------------------

_LOG_LINE = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d ohpub\[\d+\] (DEBUG|INFO|WARNING|ERROR) .*"
)


def _log_lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    assert "\x1b" not in text and "\r" not in text
    lines = text.splitlines()
    for line in lines:
        assert _LOG_LINE.fullmatch(line), line
    return lines


def test_log_file_is_plain_text_and_complete_even_when_quiet(
    oh_server: Any, tmp_path: Path
) -> None:
    log = tmp_path / "ohpub.log"
    dest = tmp_path / "m"
    res = run_cli(oh_server, ["-q", "--log-file", str(log), "mirror", str(dest), "-p", "102"])
    assert res.code == 0 and res.stderr == ""
    lines = _log_lines(log)
    assert " INFO start (ohpub " in lines[0] and f"mirror {dest} -p 102" in lines[0]
    assert any(" INFO 4 files: 4 downloaded (" in line for line in lines)
    assert lines[-1].endswith(" INFO exit 0")
    # Appends (cron runs accumulate); the environment variable works too.
    res = run_cli(oh_server, ["mirror", str(dest), "-p", "102"], env={"OHPUB_LOG_FILE": str(log)})
    again = _log_lines(log)
    assert len(again) == 2 * len(lines)
    assert any(" INFO 4 files: 0 downloaded (0 B), 4 unchanged" in line for line in again)


def test_log_file_gets_errors_and_verbose_requests(oh_server: Any, tmp_path: Path) -> None:
    _failing_storage(oh_server)
    log = tmp_path / "ohpub.log"
    env = {**FAST_RETRY, "OHPUB_RETRIES": "2"}
    args = ["-q", "-v", "--log-file", str(log), "mirror", str(tmp_path / "m"), "-p", "128"]
    res = run_cli(oh_server, args, env={**env, "OHPUB_VERBOSE": "1"})
    # -q on the command line beats OHPUB_VERBOSE... but -v is on the command line too.
    assert res.code == 2
    args.remove("-q")
    res = run_cli(oh_server, args, env=env)
    assert res.code == 1
    lines = _log_lines(log)
    assert any(" ERROR bob_smith/128/taxonomy-summary.tsv: " in line for line in lines)
    assert any(" DEBUG GET " in line and "-> 302" in line for line in lines)
    assert any(" WARNING GET " in line and "; retry 1 of 1 in " in line for line in lines)
    assert lines[-1].endswith(" INFO exit 1")
    _assert_redacted(log.read_text())


def test_log_file_that_cannot_be_opened_is_a_usage_error(oh_server: Any, tmp_path: Path) -> None:
    res = run_cli(oh_server, ["--log-file", str(tmp_path / "no" / "log"), "list", "-p", "102"])
    assert res.code == 2 and "cannot open log file" in res.stderr


# -- tables -------------------------------------------------------------------------------------


def test_file_table_reads_well_on_80_columns(oh176: Any) -> None:
    res = run_cli(oh176, ["list", "-p", "176", "-f", "table"], env={"COLUMNS": "80"})
    assert res.code == 0, res.stderr
    lines = res.stdout.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    assert lines[0].split() == ["id", "created", "(UTC)", "user", "project", "basename"]
    records = jsonl(run_cli(oh176, ["list", "-p", "176"]).stdout)
    assert len(lines) == 2 + len(records)  # header, rule, one line per file: nothing folded
    for rec in records:
        created = datetime.fromisoformat(rec["created"].replace("Z", "+00:00"))
        row = next(line for line in lines if line.lstrip().startswith(f"{rec['id']} "))
        assert row.split() == [
            str(rec["id"]),
            *created.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M").split(),
            rec["username"],
            "176",
            rec["basename"],
        ]


def test_file_table_on_a_wide_terminal_adds_datatypes_and_tags(oh_server: Any) -> None:
    res = run_cli(oh_server, ["list", "-p", "102", "-f", "table"], env={"COLUMNS": "140"})
    header = res.stdout.splitlines()[0].split()
    assert header == ["id", "created", "(UTC)", "user", "project", "datatypes", "tags", "basename"]
    assert "(hidden)" in res.stdout  # carol's hidden membership


def test_object_tables_fit_80_columns(oh_server: Any) -> None:
    for kind in ("projects", "datatypes", "members"):
        res = run_cli(oh_server, ["list", kind, "-f", "table"], env={"COLUMNS": "80"})
        assert res.code == 0, res.stderr
        assert max(len(line.rstrip()) for line in res.stdout.splitlines()) <= 80, kind
        assert "\x1b" not in res.stdout
    res = run_cli(oh_server, ["list", "projects", "-f", "table"], env={"COLUMNS": "80"})
    assert "Fitbit Connection" in res.stdout


# -- mirror --dry-run: the plan -----------------------------------------------------------------


def _changed_upstream(server: Any, dest: Path) -> int:
    """Mirror project 102, then change it upstream: a newer alice/fitbit-data.json (one to
    download, one to rename) and bob_smith's file deleted (one to remove)."""
    assert run_cli(server, ["mirror", str(dest), "-p", "102"]).code == 0
    new = server.add_file(
        basename="fitbit-data.json",
        content=b'{"steps": 12345}',
        project_id=102,
        username="alice",
        created=datetime(2025, 1, 1, tzinfo=timezone.utc),
    )
    server.delete_file(4)
    return int(new)


def test_dry_run_plan_text(oh_server: Any, tmp_path: Path) -> None:
    _changed_upstream(oh_server, tmp_path)
    before = tree(tmp_path)
    res = run_cli(oh_server, ["mirror", str(tmp_path), "-p", "102", "--dry-run"])
    assert res.code == 0, res.stderr
    assert res.stdout == ""
    assert res.stderr.splitlines() == [
        "dry run: 5 files: 1 to download (16 B), 1 to rename, 0 to remove, 2 unchanged, "
        "1 removed upstream (kept; --delete removes them)"
    ]
    res = run_cli(oh_server, ["mirror", str(tmp_path), "-p", "102", "-n", "--delete"])
    assert res.stderr.splitlines() == [
        "dry run: 4 files: 1 to download (16 B), 1 to rename, 1 to remove, 2 unchanged"
    ]
    assert tree(tmp_path) == before


def test_dry_run_jsonl_one_record_per_action_and_totals_last(
    oh_server: Any, tmp_path: Path
) -> None:
    new = _changed_upstream(oh_server, tmp_path)
    args = ["mirror", str(tmp_path), "-p", "102", "--dry-run", "--delete", "-f", "jsonl"]
    res = run_cli(oh_server, args)
    assert res.code == 0, res.stderr
    *recs, totals = jsonl(res.stdout)
    assert {r["id"]: r["status"] for r in recs} == {
        new: "planned",
        2: "renamed",
        1: "unchanged",
        6: "unchanged",
        4: "deleted",
    }
    assert totals == {
        "status": "totals",
        "files": 4,
        "download": {"files": 1, "bytes": len(content_of(oh_server, new))},
        "rename": 1,
        "remove": 1,
        "unchanged": 2,
        "removed_upstream": 0,
        "unavailable": 0,
        "skipped": 0,
        "listing_complete": True,
    }
    # Only a dry run ends with totals; a real run's records are all files.
    res = run_cli(oh_server, ["mirror", str(tmp_path), "-p", "102", "-f", "jsonl"])
    assert all(r["status"] != "totals" for r in jsonl(res.stdout))


# -- status -------------------------------------------------------------------------------------


def test_status_reports_holdings_and_the_last_complete_run(oh_server: Any, tmp_path: Path) -> None:
    assert run_cli(oh_server, ["mirror", str(tmp_path), "-p", "102"]).code == 0
    res = run_cli(oh_server, ["status", str(tmp_path), "-f", "json"])
    assert res.code == 0, res.stderr
    st = json.loads(res.stdout)
    size = sum(len(content_of(oh_server, i)) for i in (1, 2, 4, 6))
    assert (st["files"], st["bytes"]) == (4, size)
    assert st["by_project"] == {"102": {"files": 4, "bytes": size}}
    assert st["by_member"]["alice"]["files"] == 2
    assert sum(g["files"] for g in st["by_member"].values()) == 4
    run = st["last_complete_run"]
    assert run["outcome"] == "ok" and run["complete"] and run["ended_at"]
    text = run_cli(oh_server, ["status", str(tmp_path)]).stdout
    assert text.startswith("files: 4 (")
    assert re.search(
        r"^last complete run \(project 102\): ok, ended "
        r"\d{4}-\d\d-\d\d \d\d:\d\d \(just now\) after [\d.]+ s$",
        text,
        re.M,
    ), text


def test_status_max_age_exits_1_when_stale(oh_server: Any, tmp_path: Path) -> None:
    assert run_cli(oh_server, ["mirror", str(tmp_path), "-p", "102"]).code == 0
    fresh = run_cli(oh_server, ["status", str(tmp_path), "--max-age", "26h"])
    assert fresh.code == 0 and fresh.stdout.rstrip().endswith("fresh")
    stale = run_cli(oh_server, ["status", str(tmp_path), "--max-age", "0s"])
    assert stale.code == 1 and "STALE" in stale.stdout
    env = run_cli(oh_server, ["status", str(tmp_path)], env={"OHPUB_MAX_AGE": "0"})
    assert env.code == 1
    bad = run_cli(oh_server, ["status", str(tmp_path), "--max-age", "soon"])
    assert bad.code == 2 and "invalid duration" in bad.stderr


def test_status_without_a_complete_run_is_stale(oh_server: Any, tmp_path: Path) -> None:
    oh_server.faults.listing_mode = "html"
    env = {**FAST_RETRY, "OHPUB_RETRIES": "1"}
    assert run_cli(oh_server, ["mirror", str(tmp_path), "-p", "102"], env=env).code == 1
    res = run_cli(oh_server, ["status", str(tmp_path), "--max-age", "26h", "-f", "json"])
    assert res.code == 1
    assert json.loads(res.stdout)["last_complete_run"] is None


# -- version and changelog ----------------------------------------------------------------------


def test_version_is_printed_and_in_the_changelog() -> None:
    res = run_cli(None, ["--version"])
    assert res.code == 0 and res.stdout == f"ohpub {__version__}\n"
    changelog = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## [{__version__}]" in changelog
    assert "## [Unreleased]" in changelog


# -- completion scripts -------------------------------------------------------------------------

COMPLETIONS = REPO / "completions"
GENERATOR = REPO / "scripts" / "gen_completions.py"


def test_completion_scripts_are_up_to_date(tmp_path: Path) -> None:
    outs = []
    for n in (1, 2):
        out = tmp_path / str(n)
        subprocess.run(
            [sys.executable, str(GENERATOR), "--out", str(out)], check=True, capture_output=True
        )
        outs.append({p.name: p.read_text() for p in out.iterdir()})
    assert outs[0] == outs[1], "the generator is not deterministic"
    assert sorted(outs[0]) == ["_ohpub", "ohpub.bash", "ohpub.fish"]
    for name, text in outs[0].items():
        checked_in = (COMPLETIONS / name).read_text() if (COMPLETIONS / name).exists() else ""
        assert checked_in == text, (
            f"completions/{name} is out of date: run python scripts/gen_completions.py"
        )


def _bash_complete(words: list[str], cwd: Path) -> list[str]:
    script = (
        f"source {COMPLETIONS / 'ohpub.bash'}\n"
        'COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _ohpub\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    res = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", script, "bash", *words],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return [w for w in res.stdout.splitlines() if w]


def test_bash_completion(tmp_path: Path) -> None:
    (tmp_path / "a-dir").mkdir()
    (tmp_path / "a-file").write_text("x")
    assert _bash_complete(["ohpub", ""], tmp_path) == COMMAND_ORDER
    assert _bash_complete(["ohpub", "mi"], tmp_path) == ["mirror"]
    assert _bash_complete(["ohpub", "--q"], tmp_path) == ["--quiet"]
    assert _bash_complete(["ohpub", "list", "--format", ""], tmp_path) == [
        "table",
        "json",
        "jsonl",
        "csv",
    ]
    assert _bash_complete(["ohpub", "list", "--format", "=", "js"], tmp_path) == ["json", "jsonl"]
    assert _bash_complete(["ohpub", "list", ""], tmp_path) == [
        "files",
        "projects",
        "datatypes",
        "members",
    ]
    assert _bash_complete(["ohpub", "-q", "--log-file", "x", "mirror", ""], tmp_path) == ["a-dir"]
    assert _bash_complete(["ohpub", "mirror", "d", "--no-"], tmp_path) == [
        "--no-delete",
        "--no-strict",
        "--no-checksum",
    ]
    assert _bash_complete(["ohpub", "mirror", "d", "-f", ""], tmp_path) == ["text", "jsonl"]
    assert _bash_complete(["ohpub", "status", "d", "-f", ""], tmp_path) == ["text", "json"]
    assert _bash_complete(["ohpub", "fetch", "1", "-o", "a-f"], tmp_path) == ["a-file"]
    assert _bash_complete(["ohpub", "--timeout", "3", "l"], tmp_path) == ["list"]
    # Global options after the command, as the CLI accepts them there.
    assert _bash_complete(["ohpub", "list", "projects", "--q"], tmp_path) == ["--quiet"]
    assert _bash_complete(["ohpub", "mirror", "d", "--log-file", "a-f"], tmp_path) == ["a-file"]
    assert _bash_complete(["ohpub", "help", "mi"], tmp_path) == ["mirror"]
    assert _bash_complete(["ohpub", "completion", ""], tmp_path) == ["bash", "zsh", "fish"]


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_completion() -> None:
    def complete(line: str) -> list[str]:
        script = f"source {COMPLETIONS / 'ohpub.fish'}; complete -C {json.dumps(line)}"
        res = subprocess.run(["fish", "-c", script], capture_output=True, text=True, check=True)
        return sorted(w.split("\t")[0] for w in res.stdout.splitlines())

    assert complete("ohpub ") == sorted(COMMAND_ORDER)
    assert complete("ohpub list --format ") == ["csv", "json", "jsonl", "table"]
    assert complete("ohpub mirror --j") == ["--jobs"]
    assert complete("ohpub --q") == ["--quiet"]
    assert complete("ohpub status x -f ") == ["json", "text"]


_ZSH_CAPTURE = r"""
zmodload zsh/zpty zsh/datetime
zpty z zsh -f -i
zpty -w z "PROMPT=''; fpath=($1 \$fpath); autoload -U compinit; compinit -u -D"
zpty -w z 'compadd () { builtin compadd -O __hits "$@"; print -r -l -- "<<${^__hits[@]}>>" }'
zpty -w z "bindkey '^I' complete-word; print -r -- __RE""ADY__"
local out="" chunk mark=__READY__
local -F end=$(( EPOCHREALTIME + 20 ))
while (( EPOCHREALTIME < end )); do
  if zpty -r -t z chunk; then out+=$chunk; else sleep 0.02; fi
  if [[ $out == *$'\n'$mark* ]]; then
    [[ $mark == __END__ ]] && break
    out="" mark=__END__
    zpty -w -n z "$2"$'\t'
    sleep 0.5
    zpty -w z $'\x15print -r -- __E""ND__'
  fi
done
print -r -- "$out"
zpty -d z
"""


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_completion(tmp_path: Path) -> None:
    fpath = tmp_path / "fpath"
    fpath.mkdir()
    shutil.copy(COMPLETIONS / "_ohpub", fpath / "_ohpub")
    (tmp_path / "capture.zsh").write_text(_ZSH_CAPTURE)
    assert subprocess.run(["zsh", "-n", str(COMPLETIONS / "_ohpub")]).returncode == 0

    def complete(line: str) -> list[str]:
        res = subprocess.run(
            ["zsh", "-f", str(tmp_path / "capture.zsh"), str(fpath), line],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        return sorted(set(re.findall(r"<<([^$<>]+)>>", res.stdout)))

    assert complete("ohpub list --format ") == ["csv", "json", "jsonl", "table"]
    assert complete("ohpub mi") == ["mirror"]
    assert "--jobs" in complete("ohpub mirror x --")
    assert "--quiet" in complete("ohpub --")


def test_bare_ohpub_prints_the_help_on_stderr(oh_server: Any) -> None:
    res = run_cli(oh_server, [])
    assert res.code == 2 and res.stdout == ""
    assert (
        res.stderr.startswith("Usage: ohpub [OPTIONS] COMMAND") and "ohpub: error" not in res.stderr
    )


# -- conventions (issue 12, problem 5) ------------------------------------------------------


def test_global_options_work_after_the_command(oh_server: Any, tmp_path: Path) -> None:
    res = run_cli(oh_server, ["list", "projects", "-q"])
    assert res.code == 0 and res.stderr == "", res.stderr
    assert {p["id"] for p in jsonl(res.stdout)} >= {102, 128}
    res = run_cli(oh_server, ["mirror", str(tmp_path), "-p", "102", "-v"])
    assert res.code == 0, res.stderr
    assert re.search(r"^ohpub: GET \S+/api/public/project/102/", res.stderr, re.M)
    log = tmp_path / "x.log"
    res = run_cli(oh_server, ["status", str(tmp_path), "--log-file", str(log), "--quiet"])
    assert res.code == 0 and res.stderr == "" and log.read_text().rstrip().endswith("exit 0")
    # A command's own option of the same spelling stays the command's; '--' ends options.
    res = run_cli(oh_server, ["list", "-p", "102", "-n", "1", "--timeout", "5"])
    assert res.code == 0 and len(jsonl(res.stdout)) == 1


def test_help_command_and_short_version() -> None:
    assert run_cli(None, ["help"]).stdout == run_cli(None, ["--help"]).stdout
    for name in COMMAND_ORDER:
        res = run_cli(None, ["help", name])
        assert res.code == 0 and res.stdout == run_cli(None, [name, "--help"]).stdout, name
    res = run_cli(None, ["help", "mirorr"])
    assert res.code == 2 and "did you mean 'mirror'?" in res.stderr
    res = run_cli(None, ["-V"])
    assert res.code == 0 and res.stdout == f"ohpub {__version__}\n"


@pytest.mark.parametrize(
    ("args", "wrong", "right"),
    [
        (["--qiuet", "list"], "--qiuet", "--quiet"),
        (["list", "--qiuet"], "--qiuet", "--quiet"),
        (["mirror", "d", "--qiuet"], "--qiuet", "--quiet"),
        (["mirror", "d", "--jbos", "2"], "--jbos", "--jobs"),
        (["list", "--projet", "1"], "--projet", "--project"),
        (["status", "d", "--max-aeg", "1h"], "--max-aeg", "--max-age"),
    ],
)
def test_misspelled_options_get_a_sensible_suggestion(
    args: list[str], wrong: str, right: str
) -> None:
    res = run_cli(None, args)
    assert res.code == 2
    see = "ohpub help" if args[0].startswith("-") else f"ohpub help {args[0]}"
    assert res.stderr.splitlines() == [
        f"ohpub: error: unknown option {wrong} (did you mean {right}?); see '{see}'"
    ]


def test_help_and_errors_speak_ohpubs_words(oh_server: Any) -> None:
    for cmd in [[], *([c] for c in COMMAND_ORDER)]:
        text = run_cli(None, [*cmd, "--help"]).stdout
        for python_ism in ("<list[", "<int>", "<str>", "{", "x>=", "<=x", "PATH <"):
            assert python_ism not in text, (cmd, python_ism)
    assert "Usage: ohpub fetch [OPTIONS] ID..." in run_cli(None, ["fetch", "--help"]).stdout
    assert "Usage: ohpub mirror [OPTIONS] DEST" in run_cli(None, ["mirror", "--help"]).stdout
    cases = {
        ("fetch", "abc"): "invalid value for ID: 'abc' is not a whole number",
        ("list", "--limit", "x"): "invalid value for --limit: 'x' is not a whole number",
        ("mirror", "d", "-j", "0"): "invalid value for --jobs: 0 is too small (at least 1)",
        ("list", "foo"): "invalid value for KIND: 'foo' is not one of 'files', 'projects', "
        "'datatypes', 'members'",
    }
    for args, message in cases.items():
        res = run_cli(oh_server, list(args))
        assert res.code == 2
        assert res.stderr.startswith(f"ohpub: error: {message}; see 'ohpub help "), res.stderr
        assert "Input should" not in res.stderr and "Value error" not in res.stderr
    res = run_cli(oh_server, ["mirror", "d"], env={"OHPUB_JOBS": "0"})
    assert "invalid value for --jobs (from OHPUB_JOBS): 0 is too small" in res.stderr


def test_unknown_ohpub_variable_is_named_with_the_closest_known_one(oh_server: Any) -> None:
    res = run_cli(oh_server, ["list", "-p", "102"], env={"OHPUB_USERS": "benc"})
    assert res.code == 0
    assert res.stderr.splitlines() == [
        "ohpub: warning: unknown environment variable OHPUB_USERS is ignored; "
        "did you mean OHPUB_USER?"
    ]
    res = run_cli(oh_server, ["list", "-p", "102"], env={"OHPUB_ZZZZZZZZ": "1"})
    assert res.stderr == "ohpub: warning: unknown environment variable OHPUB_ZZZZZZZZ is ignored\n"
    res = run_cli(oh_server, ["list", "-p", "102"], env={"OHPUB_USER": "alice"})
    assert res.stderr == ""


def test_durations_need_a_unit(oh_server: Any, tmp_path: Path) -> None:
    assert run_cli(oh_server, ["mirror", str(tmp_path), "-p", "102"]).code == 0
    res = run_cli(oh_server, ["status", str(tmp_path), "--max-age", "26"])
    assert res.code == 2
    assert res.stderr.startswith("ohpub: error: duration '26' has no unit; add one: 26s, 26m")
    assert run_cli(oh_server, ["status", str(tmp_path), "--max-age", "26h"]).code == 0
    assert "with a unit" in run_cli(None, ["status", "--help"]).stdout


def test_completion_command_prints_the_shipped_scripts() -> None:
    for shell, name in (("bash", "ohpub.bash"), ("zsh", "_ohpub"), ("fish", "ohpub.fish")):
        res = run_cli(None, ["completion", shell])
        assert res.code == 0 and res.stdout == (COMPLETIONS / name).read_text(), shell
    assert run_cli(None, ["completion", "tcsh"]).code == 2
    assert "ohpub completion bash" in README and "completions/ohpub.bash" not in README


def test_completion_scripts_ship_in_the_wheel(tmp_path: Path) -> None:
    import zipfile

    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(REPO), "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {res.stderr[-300:]}")
    (wheel,) = tmp_path.glob("ohpub-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        for name in ("_ohpub", "ohpub.bash", "ohpub.fish"):
            shipped = zf.read(f"ohpub/cli/completions/{name}").decode()
            assert shipped == (COMPLETIONS / name).read_text(), f"the wheel's {name} differs"


def test_mirror_without_a_filter_says_what_it_is_about_to_mirror(
    oh_server: Any, tmp_path: Path
) -> None:
    res = run_cli(oh_server, ["mirror", str(tmp_path)])
    assert res.code == 0, res.stderr
    lines = res.stderr.splitlines()
    assert lines[0] == f"ohpub: no filter given: mirroring every public file into {tmp_path}"
    assert re.match(r"\d+ files: \d+ downloaded", lines[-1])
    # With a filter, or a dry run, no such line.
    res = run_cli(oh_server, ["mirror", str(tmp_path / "p"), "-p", "102"])
    assert "no filter given" not in res.stderr
    # Once the listing's own count is known (Events.expected), the line gives it.
    from ohpub.cli.progress import MirrorView

    with _captured_stderr() as err:
        view = MirrorView(fmt="text", quiet=False, bars=False, out=sys.stdout, announce_all="D")
        view.expected(1234)
        view.listed(1)
        view.close()
    assert err() == "ohpub: no filter given: mirroring all 1234 public files into D\n"


@contextlib.contextmanager
def _captured_stderr() -> Iterator[Callable[[], str]]:
    """What was written to sys.stderr inside the block (read it after)."""
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        yield buf.getvalue


# -- visible waiting (issue 12, problem 2) --------------------------------------------------

RETRY_LINE = "GET http://h/api/public/datafiles/ failed (connection refused); retry 2 of 6 in 4 s"


def test_retry_records_show_on_stderr_unless_quiet_and_always_in_the_log(
    tmp_path: Path,
) -> None:
    import logging

    from ohpub.cli.render import configure_logging

    for quiet in (False, True):
        log = tmp_path / f"{quiet}.log"
        configure_logging(verbose=False, quiet=quiet, log_file=log)
        with _captured_stderr() as err:
            logging.getLogger("ohpub.retry").warning(RETRY_LINE)
        assert err() == ("" if quiet else f"ohpub: {RETRY_LINE}\n")
        assert log.read_text().rstrip().endswith(f" WARNING {RETRY_LINE}")
    configure_logging(verbose=False, quiet=False, log_file=None)


def test_timeout_and_retry_options_say_what_they_bound(oh_server: Any) -> None:
    text = " ".join(run_cli(None, ["--help"], env={"COLUMNS": "200"}).stdout.split())
    assert "--timeout SECONDS Longest wait for any one answer: to connect" in text
    assert "--retry-budget SECONDS" in text
    res = run_cli(oh_server, ["--retry-budget", "2m", "--retry-base", "0.01", "list", "-p", "102"])
    assert res.code == 0, res.stderr
    res = run_cli(oh_server, ["--retry-budget", "soon", "list", "-p", "102"])
    assert res.code == 2 and "invalid number of seconds 'soon'" in res.stderr
    for name in ("OHPUB_RETRY_BUDGET", "OHPUB_RETRY_BASE", "OHPUB_RETRY_CAP"):
        assert name in README


# -- after Ctrl-C (issue 12, problem 6) -------------------------------------------------------


def test_interrupted_line_counts_what_was_done() -> None:
    from ohpub.cli.progress import MirrorView
    from ohpub.mirror.types import FileResult
    from ohpub.model.records import FileStatus

    view = MirrorView(fmt="text", quiet=True, bars=False, out=sys.stdout)
    view.listed(31)
    view.listing_done(31)
    for i in range(12):
        view.result(FileResult(i, f"a/{i}", FileStatus.DOWNLOADED))
    for i in range(3):
        view.result(FileResult(100 + i, f"b/{i}", FileStatus.UNCHANGED))
    assert view.counts.interrupted_text() == (
        "interrupted: 12 downloaded, 3 unchanged, 16 not done; a rerun resumes"
    )
    early = MirrorView(fmt="text", quiet=True, bars=False, out=sys.stdout)
    early.listed(40)
    assert early.counts.interrupted_text() == (
        "interrupted: 0 downloaded, listing stopped after 40 files; a rerun resumes"
    )


def test_readme_says_exactly_which_files_resume() -> None:
    text = " ".join(README.split())
    assert "A file over 1 MiB that was partly downloaded keeps its partial bytes" in text
    assert "Files of 1 MiB or less keep no resume record" in text
    assert "start again from the first byte" in text
    assert "partial downloads are kept and the next run resumes" not in text
