"""Forked processes: the task zygote of the built-in service, and the handle of any process a
zygote forked (moto_region.MotoFleet's servers use it too).

The reference service's task (`python -m gameday.sut.service ARGS`) spends ~0.3 CPU-s before it
listens, nearly all of it importing boto3 and reading botocore's models: the same work in every
task, four at a cold start, each again for every replacement. The zygote is one process that does
it once (`python -m gameday.environments.local.zygote`), then forks a task per launch request:
each task is a real process of its own (its pid, its process group, its log, its environment,
its exit status), running `gameday.sut.service.main(ARGS)` as `python -m` would, in ~30 ms.

What the zygote preloads changes no answer: modules, and botocore's data files parsed once and
shared by every Loader (moto_main.share_sdk_data: the files do not change). The task makes its
own boto3 session and client from its own flags and environment, after the fork, as before.
Only the built-in service is forked: a team's own `service.command` is spawned as given.

Protocol (one JSON line each way): the starter writes {"id", "args", "env", "log"}; the zygote
answers {"id", "pid"} (or {"id", "error"}) and, when a task ends, {"pid", "exited"}.
"""

from __future__ import annotations

import gc
import json
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

SERVICE_MODULE = "gameday.sut.service"


class ForkedProcess:
    """A process a zygote forked, handled as procs.terminate/kill_now handle a Popen: `pid` (it
    leads its own process group), poll(), wait(timeout), returncode. The zygote, its parent,
    reaps it; the starter learns its exit status from what the zygote says."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None
        self._exited = threading.Event()

    def exited(self, code: int) -> None:
        self.returncode = code
        self._exited.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._exited.wait(timeout):
            raise subprocess.TimeoutExpired(f"forked process {self.pid}", timeout)
        return self.returncode


def become_forked_child(zygote_pid: int, log_path: str | None, name: str) -> None:
    """In a freshly forked child: die with the zygote, lead a process group of its own (a stop
    signals the group, as procs.spawn's children), output to `log_path`, stdin from /dev/null."""
    from gameday.procs import set_parent_death_signal

    set_parent_death_signal()
    if os.getppid() != zygote_pid:   # the zygote died before the line above: nobody would stop us
        os._exit(1)
    os.setpgrp()
    _set_name(name)
    if log_path:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 2)
        os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)


def exit_code(e: SystemExit) -> int:
    """The status `python` exits with for SystemExit `e` (sys.exit(None) 0, sys.exit(int), else 1)."""
    return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)


def _set_name(name: str) -> None:
    """The process's name in ps/top (/proc/PID/comm, 15 bytes): its cmdline is the zygote's."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(15, name.encode()[:15], 0, 0, 0)   # PR_SET_NAME
    except OSError:
        pass


# -- the starter's side ---------------------------------------------------------------------------------

class ZygoteReader:
    """Reads a zygote's stdout (one JSON line a message) in a thread of its own. A message naming
    a new "pid" makes its ForkedProcess handle (msg["handle"]) before it is queued, so the
    process's exit, {"pid", "exited"}, always finds it; the exit of a process never announced
    (it failed before) is queued too. End of output: the zygote is gone, and its children with it
    (PR_SET_PDEATHSIG): every handle ends, and next() answers None."""

    def __init__(self, stream, name: str):
        self.handles: dict[int, ForkedProcess] = {}
        self._messages: queue.Queue = queue.Queue()
        self._stream = stream
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for line in self._stream:
            try:
                msg = json.loads(line)
            except ValueError:   # not the zygote's: something it loaded printed on stdout
                continue
            pid = msg.get("pid")
            if "exited" in msg and pid in self.handles:
                self.handles.pop(pid).exited(msg["exited"])
                continue
            if pid is not None and "exited" not in msg:
                msg["handle"] = self.handles[pid] = ForkedProcess(pid)
            self._messages.put(msg)
        for handle in self.handles.values():
            if handle.returncode is None:
                handle.exited(-signal.SIGKILL)
        self._messages.put(None)

    def next(self, timeout_s: float) -> dict | None:
        """The next message; None once the zygote is gone (and from then on) or after timeout_s."""
        try:
            msg = self._messages.get(timeout=max(0.0, timeout_s))
        except queue.Empty:
            return None
        if msg is None:
            self._messages.put(None)
        return msg


def _read_exactly(conn, n: int) -> bytes:
    """n bytes from a socket (fewer if it closes or times out): nothing past them is consumed."""
    got = b""
    try:
        while len(got) < n:
            chunk = conn.recv(n - len(got))
            if not chunk:
                break
            got += chunk
    except OSError:
        pass
    return got


class ConnectedProcess:
    """A forked process whose stdin and stdout are one loopback connection to the starter,
    handled as a Popen with stdin/stdout pipes (binary file objects); its exit is the zygote's
    handle's."""

    def __init__(self, handle: ForkedProcess, conn):
        self._handle = handle
        self.pid = handle.pid
        self.stdin = conn.makefile("wb")
        self.stdout = conn.makefile("rb")
        conn.close()   # the file objects keep the socket open until they are closed

    @property
    def returncode(self) -> int | None:
        return self._handle.returncode

    def poll(self) -> int | None:
        return self._handle.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self._handle.wait(timeout)


class ZygoteError(OSError):
    """The zygote could not start a task (an OSError: the ECS scheduler treats it as a failed launch)."""


class TaskZygote:
    """The starter's handle on a task zygote: start(), launch(args, env, log_path) -> ForkedProcess, stop()."""

    def __init__(self, log_path: Path):
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen | None = None
        self.reader: ZygoteReader | None = None
        self._lock = threading.Lock()   # one launch at a time: each reply is the latest request's
        self._next_id = 0

    def start(self) -> "TaskZygote":
        from gameday import procs

        self.proc = procs.spawn([procs.python(), "-m", __name__], self.log_path,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.reader = ZygoteReader(self.proc.stdout, "task-zygote")
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def launch(self, args: list[str], env: dict[str, str], log_path: Path, timeout_s: float = 30.0) -> ForkedProcess:
        """`python -m gameday.sut.service ARGS` with `env` added to the environment, output to
        log_path: forked from the zygote (which may still be importing: then this waits)."""
        return self._request({"args": list(args), "env": dict(env), "log": str(log_path)}, timeout_s)

    def launch_connected(self, script: Path, env: dict[str, str], log_path: Path, *, cwd: Path | None = None,
                         name: str = "script", timeout_s: float = 30.0) -> "ConnectedProcess":
        """`python -P SCRIPT` forked from the zygote, its stdin and stdout a connection to this
        process (as Popen's pipes), stderr to log_path, `env` added to the environment."""
        import secrets
        import socket

        token = secrets.token_hex(16)
        with socket.create_server(("127.0.0.1", 0)) as listener:
            listener.settimeout(timeout_s)
            handle = self._request({"script": str(script), "env": dict(env), "log": str(log_path), "name": name,
                                    "cwd": str(cwd) if cwd else None,
                                    "connect": [listener.getsockname()[1], token]}, timeout_s)
            deadline = time.monotonic() + timeout_s
            while True:   # only the child knows the token: another local connection is dropped
                try:
                    listener.settimeout(max(0.01, deadline - time.monotonic()))
                    conn, _ = listener.accept()
                except OSError:
                    if handle.poll() is None:
                        os.killpg(handle.pid, signal.SIGKILL)
                    raise ZygoteError(f"forked {name} (pid {handle.pid}) did not connect within {timeout_s:.0f}s; "
                                      f"see {log_path}") from None
                conn.settimeout(max(0.01, deadline - time.monotonic()))
                if _read_exactly(conn, len(token) + 1) == token.encode() + b"\n":
                    conn.settimeout(None)
                    return ConnectedProcess(handle, conn)
                conn.close()

    def _request(self, payload: dict, timeout_s: float) -> ForkedProcess:
        with self._lock:
            self._next_id += 1
            line = json.dumps({"id": self._next_id, **payload})
            try:
                self.proc.stdin.write(line.encode() + b"\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                raise ZygoteError(f"task zygote is gone; see {self.log_path}") from None
            reply = self._reply(self._next_id, timeout_s)
        if reply is None:
            raise ZygoteError(f"task zygote exited or did not fork within {timeout_s:.0f}s; see {self.log_path}")
        if "error" in reply:
            raise ZygoteError(reply["error"])
        return reply["handle"]

    def _reply(self, request_id: int, timeout_s: float) -> dict | None:
        """The zygote's answer to request_id; a late answer to an earlier request that timed out
        names a task nobody holds: it is killed."""
        deadline = time.monotonic() + timeout_s
        while True:
            reply = self.reader.next(deadline - time.monotonic())
            if reply is None or reply.get("id") == request_id:
                return reply
            if "handle" in reply:
                try:
                    os.killpg(reply["pid"], signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def stop(self) -> None:
        """The zygote ends (its remaining tasks with it: stop them first for a graceful end)."""
        from gameday import procs

        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        procs.terminate(self.proc)
        self.reader.thread.join(timeout=5)


# -- the zygote's side --------------------------------------------------------------------------------

def warm() -> None:
    """What every task loads before it listens: the service, boto3, and botocore's data for a
    DynamoDB client (made here with a throwaway boto3 Session, whose Loader searches the paths
    the task's default Session will: the tasks make their own session and client)."""
    import tenacity  # noqa: F401 - the service's retry policy, loaded on its first request otherwise

    from gameday.environments.local.moto_main import share_sdk_data

    share_sdk_data()
    import boto3
    from boto3.dynamodb import types  # noqa: F401
    from botocore.config import Config  # noqa: F401

    from gameday.sut import service  # noqa: F401

    # the host's profile settings are no business of the warm-up (a profile the host names but does
    # not have would fail it, and every task with it): the children get them back as they were
    profiles = {k: os.environ.pop(k) for k in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE") if k in os.environ}
    try:
        boto3.session.Session().client("dynamodb", region_name="us-east-1", endpoint_url="http://127.0.0.1:9",
                                       aws_access_key_id="warm", aws_secret_access_key="warm")
    finally:
        os.environ.update(profiles)


def _fork_task(zygote: int, request: dict, wake_fds: tuple[int, int]) -> int:
    """Fork one task; in the child, run the service and never return."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in wake_fds:
            os.close(fd)
        if request.get("script"):
            code = _run_script(zygote, request)
        else:
            args = request["args"]
            region = args[args.index("--region") + 1] if "--region" in args[:-1] else ""
            become_forked_child(zygote, request["log"], f"task-{region}" if region else "task")
            os.dup2(2, 1)
            os.environ.update(request["env"])
            gc.enable()
            from gameday.sut import service

            code = service.main(request["args"])
    except SystemExit as e:   # argparse's errors: 2, as `python -m` would exit
        code = exit_code(e)
    except BaseException:  # noqa: BLE001 - the traceback to the task's log, the exit code to the scheduler
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - exiting anyway
                pass
        os._exit(code if isinstance(code, int) else 1)   # main() returns an int; anything else is a failure


def _run_script(zygote: int, request: dict) -> int:
    """In a forked child: run request["script"] as `python -P SCRIPT` would, its stdin and stdout
    a loopback connection back to the starter (launch_connected), in request["cwd"], with
    request["env"] added to the environment. The command line's own sys.path entry (`python -m`
    put the zygote's working directory first) is dropped, as -P would not add it."""
    import runpy
    import socket

    become_forked_child(zygote, request["log"], request.get("name") or "script")
    port, token = request["connect"]
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn.sendall(token.encode() + b"\n")
    conn.settimeout(None)
    for fd in (0, 1):
        os.dup2(conn.fileno(), fd)
    conn.close()
    if request.get("cwd"):
        os.chdir(request["cwd"])
    os.environ.update(request["env"])
    if _COMMAND_PATH is not None and _COMMAND_PATH in sys.path:
        sys.path.remove(_COMMAND_PATH)
    gc.enable()
    try:
        runpy.run_path(request["script"], run_name="__main__")
    except SystemExit as e:
        return exit_code(e)
    return 0


def _say(msg: dict) -> None:
    os.write(1, (json.dumps(msg) + "\n").encode())


def serve_launches() -> None:
    """Fork a task per request line on stdin; report each task's exit; return at end of input."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)   # its arrival wakes select (the wakeup fd)
    zygote, pending, children = os.getpid(), b"", set()
    while True:
        ready, _, _ = select.select([0, wake_r], [], [])
        if wake_r in ready:
            os.read(wake_r, 4096)
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if not pid:
                break
            children.discard(pid)
            _say({"pid": pid, "exited": os.waitstatus_to_exitcode(status)})
        if 0 not in ready:
            continue
        data = os.read(0, 65536)
        if not data:
            return
        pending += data
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            request = json.loads(line)
            try:
                pid = _fork_task(zygote, request, (wake_r, wake_w))
            except OSError as e:
                _say({"id": request["id"], "error": f"fork failed: {e}"})
                continue
            try:   # the child does it too: whichever runs first, the group exists once the starter hears of it
                os.setpgid(pid, pid)
            except OSError:
                pass   # it already exited: its exit is reported like any other
            children.add(pid)
            _say({"id": request["id"], "pid": pid})


_COMMAND_PATH: str | None = None   # the sys.path entry `python -m` added for the zygote's command line


def main() -> None:
    global _COMMAND_PATH
    _COMMAND_PATH = sys.path[0] if sys.path else None
    # the warm-up allocates objects that all live: the collector's passes over them find nothing
    gc.disable()
    warm()
    gc.freeze()   # what the tasks share stays untouched by their collectors: its pages stay shared
    serve_launches()


if __name__ == "__main__":
    main()
