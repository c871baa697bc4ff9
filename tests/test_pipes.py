"""Closed pipes, one rule for every command (issue 12, problem 3): when the reader of
stdout goes away, ``list``, ``status``, ``verify`` and ``fetch -o -`` stop quietly with
exit 0 (and the log says so, and ends with ``exit 0``); ``mirror --format jsonl`` stops
writing records but finishes the mirror, and exits with the mirror's code.

Each case runs 20 times in a row, as real processes on real pipes against the local
server, because the failure was a race (``ohpub list | head -1`` exited 1 in 6 of 8 runs):
the first as a whole ``python -m ohpub``, the others forked from a process that has
ohpub imported already, four at a time, to keep the file quick.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import FAST_RETRY, REPO, add_big_file, run_cli
from tests.ohserver import OHServer

RUNS = 20


@pytest.fixture
def paced176() -> Iterator[OHServer]:
    """Project 176 with listing pages of 5 files that each take a moment: records keep
    coming after the reader has gone, so every run meets the closed pipe."""
    with OHServer().load_project176() as server:
        server.faults.latency["api"] = 0.03
        yield server


def _env(server: OHServer) -> dict[str, str]:
    return {
        **os.environ,
        **FAST_RETRY,
        "OHPUB_BASE_URL": server.base_url,
        "OHPUB_PAGE_SIZE": "5",
        "NO_COLOR": "1",
    }


def _run(
    args: list[str], env: dict[str, str], read: Callable[[Any], bytes], *, fresh: bool = False
) -> tuple[int, str]:
    """Run ``ohpub ARGS`` in a process of its own with stdout and stderr on pipes; ``read``
    takes what it wants from stdout, then our end is closed (the reader goes away).
    Returns (exit code, stderr).

    ``fresh``: a whole ``python -m ohpub`` (interpreter start and shutdown included).
    Otherwise the process is forked by a server that imported ohpub once (``serve``),
    which spares the ~0.5 s import per run; after the fork it is a real process on real
    pipes like any other.
    """
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    conn: socket.socket | None = None
    proc: subprocess.Popen[bytes] | None = None
    if fresh:
        cmd = [sys.executable, "-m", "ohpub", *args]
        proc = subprocess.Popen(cmd, stdout=out_w, stderr=err_w, env=env, cwd=REPO)
    else:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(_server())
        socket.send_fds(conn, [json.dumps([args, env]).encode()], [out_w, err_w])
    os.close(out_w)
    os.close(err_w)
    with os.fdopen(out_r, "rb") as out, os.fdopen(err_r, "rb") as err_pipe:
        got = read(out)
        out.close()
        err = err_pipe.read().decode()
    if proc is not None:
        code = proc.wait(timeout=120)
    else:
        assert conn is not None
        with conn:
            code = int(conn.makefile().readline())
    assert got or read is _nothing, "the reader got nothing before leaving"
    return code, err


def serve(path: str) -> None:
    """The fork server: import ohpub once, then for each connection fork a runner with the
    pipes it was sent as stdout and stderr, and answer with the runner's exit code."""
    import ohpub.cli.main

    # Warm up: the first invocation builds the command tree (the costly part after imports).
    with (
        open(os.devnull, "w") as null,
        contextlib.redirect_stdout(null),
        contextlib.suppress(SystemExit),
    ):
        ohpub.cli.main.main(["mirror", "--help"])
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".new")
    listener.listen(16)
    os.rename(path + ".new", path)  # the path appears once connections are accepted
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # handlers are reaped by the kernel
    while True:
        conn, _ = listener.accept()
        if os.fork() == 0:  # the handler of this connection
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            listener.close()
            msg, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 2)
            args, env = json.loads(msg)
            runner = os.fork()
            if runner == 0:
                conn.close()
                os.dup2(fds[0], 1)
                os.dup2(fds[1], 2)
                for fd in fds:
                    os.close(fd)
                os.chdir(REPO)
                os.environ.clear()
                os.environ.update(env)
                code = 1
                try:
                    ohpub.cli.main.main(args)
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else 1
                finally:
                    for stream in (sys.stdout, sys.stderr):  # as the interpreter would
                        with contextlib.suppress(Exception):
                            stream.flush()
                    os._exit(code)
            for fd in fds:
                os.close(fd)
            _, status = os.waitpid(runner, 0)
            conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
            os._exit(0)
        conn.close()


_SERVER: list[str] = []
_SERVER_LOCK = threading.Lock()


def _server() -> str:
    """The socket of the fork server, started on first use, stopped at exit."""
    with _SERVER_LOCK:
        if not _SERVER:
            _start_server()
    return _SERVER[0]


def _start_server() -> None:
    if not _SERVER:
        path = os.path.join(tempfile.mkdtemp(prefix="ohpub-forks-"), "s")
        code = f"from tests.test_pipes import serve; serve({path!r})"
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
        atexit.register(proc.kill)
        deadline = time.monotonic() + 30
        while not os.path.exists(path):
            assert time.monotonic() < deadline and proc.poll() is None, "no fork server"
            time.sleep(0.02)
        _SERVER.append(path)


def _first_line(pipe: Any) -> bytes:
    return bytes(pipe.readline())


def _nothing(pipe: Any) -> bytes:
    return b""


def _ten_bytes(pipe: Any) -> bytes:
    return bytes(pipe.read(10))


def _many(
    n: int, call: Callable[[int], tuple[int, str]], *, at_once: int = 4
) -> list[tuple[int, str]]:
    with ThreadPoolExecutor(max_workers=at_once) as pool:
        return list(pool.map(call, range(n)))


def _quiet_exit_0(results: list[tuple[int, str]], log_dir: Path) -> None:
    for i, (code, err) in enumerate(results):
        assert (code, err) == (0, ""), f"run {i}: exit {code}, stderr {err!r}"
        lines = (log_dir / f"{i}.log").read_text().splitlines()
        assert "stdout closed by its reader" in lines[-2], lines[-3:]
        assert lines[-1].endswith(" INFO exit 0"), lines[-3:]


def test_list_into_a_closed_pipe_exits_0_quietly(paced176: OHServer, tmp_path: Path) -> None:
    env = _env(paced176)

    def one(i: int) -> tuple[int, str]:
        args = ["--log-file", str(tmp_path / f"{i}.log"), "list", "-p", "176", "-f", "jsonl"]
        return _run(args, env, _first_line, fresh=i == 0)

    _quiet_exit_0(_many(RUNS, one), tmp_path)


def test_status_and_verify_into_a_closed_pipe_exit_0_quietly(
    oh176: OHServer, tmp_path: Path
) -> None:
    dest = tmp_path / "m"
    assert run_cli(oh176, ["mirror", str(dest), "-p", "176"]).code == 0
    env = _env(oh176)
    for command in (["status", str(dest)], ["verify", str(dest), "-f", "jsonl"]):
        logs = tmp_path / command[0]
        logs.mkdir()

        def one(i: int, command: list[str] = command, logs: Path = logs) -> tuple[int, str]:
            args = ["--log-file", str(logs / f"{i}.log"), *command]
            return _run(args, env, _nothing, fresh=i == 0)

        # verify holds DEST's lock: its runs go one after the other.
        _quiet_exit_0(_many(RUNS, one, at_once=1 if command[0] == "verify" else 4), logs)


def test_fetch_to_stdout_into_a_closed_pipe_exits_0_quietly(
    oh_server: OHServer, tmp_path: Path
) -> None:
    big = add_big_file(oh_server, 4 * 1024 * 1024)  # far more than a pipe holds
    env = _env(oh_server)

    def one(i: int) -> tuple[int, str]:
        args = ["--log-file", str(tmp_path / f"{i}.log"), "fetch", str(big), "-o", "-"]
        return _run(args, env, _ten_bytes, fresh=i == 0)

    results = _many(RUNS, one)
    for _code, err in results:
        assert "cannot write" not in err and "Broken pipe" not in err
    _quiet_exit_0(results, tmp_path)


def test_mirror_jsonl_into_a_closed_pipe_finishes_the_mirror(
    oh176: OHServer, tmp_path: Path
) -> None:
    env = _env(oh176)

    def one(i: int) -> tuple[int, str]:
        args = ["mirror", str(tmp_path / str(i)), "-p", "176", "-f", "jsonl"]
        return _run(args, env, _first_line, fresh=i == 0)

    for i, (code, err) in enumerate(_many(RUNS, one)):
        assert code == 0, f"run {i}: {err}"
        assert err.startswith("31 files: 31 downloaded ("), err
        placed = [p for p in (tmp_path / str(i)).rglob("*.json") if ".ohpub" not in p.parts]
        assert len(placed) == 31, f"run {i}: {len(placed)} files placed"


def test_mirror_jsonl_into_a_closed_pipe_keeps_the_mirrors_exit_code(
    paced176: OHServer, tmp_path: Path
) -> None:
    paced176.faults.script(role="storage", path_regex="track-metadata", statuses=[503] * 500)
    env = {**_env(paced176), "OHPUB_RETRIES": "1"}
    code, err = _run(["mirror", str(tmp_path), "-p", "176", "-f", "jsonl"], env, _first_line)
    assert code == 1, err
    assert "failed" in err.splitlines()[-1]
