"""The `gameday` command line.

  gameday up        start the local environment in the foreground and print its endpoints
  gameday status    alarm states, DNS answer, tasks per region, replication lag
  gameday run       run the resilience suite (pytest underneath) into a run directory
  gameday rollback  roll back a run's faults from its journal (after a SIGKILL)
  gameday init      start your own repository on gameday (config, example scenario, nightly workflow)
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Optional

import typer

from gameday import render
from gameday.config import ConfigError, GamedayConfig, load_config

app = typer.Typer(
    add_completion=False, no_args_is_help=True, rich_markup_mode=None,
    help="gameday: rehearse a multi-region AWS failover (alarm -> SNS -> Lambda -> Route 53) "
         "under load and faults, and measure it.",
)

ConfigOpt = typer.Option(None, "--config", "-c", help="gameday.toml to use (default: ./gameday.toml, else the seed defaults)")
HandlerOpt = typer.Option(None, "--failover-handler", help="failover Lambda handler as module:function (overrides the config)")


def fail(msg: str, code: int = 2) -> None:
    typer.echo(render.error(msg), err=True)
    raise typer.Exit(code)


def _config(path: Optional[Path], handler: Optional[str] = None):
    overrides = {"failover": {"handler": handler}} if handler else None
    try:
        return load_config(path, overrides)
    except ConfigError as e:
        fail(str(e))


@app.command()
def up(
    config: Optional[Path] = ConfigOpt,
    failover_handler: Optional[str] = HandlerOpt,
    as_json: bool = typer.Option(False, "--json", help="print the endpoints as one JSON line, then stay up"),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="where logs and the timeline go (default: a new reports/runs/<id>)"),
    state_file: Optional[Path] = typer.Option(None, "--state-file", help="where to write the endpoints for other tools (default .gameday/local.json or $GAMEDAY_STATE)"),
    web: bool = typer.Option(False, "--web", help="also start Locust's web UI with its Chaos tab against this environment "
                             "(docs/web-ui.md); Locust's log goes to RUN_DIR/locust.log"),
    web_host: str = typer.Option("127.0.0.1", "--web-host", help="with --web: address the web UI binds to; off loopback "
                                 "it needs $GAMEDAY_WEB_TOKEN (the login password)"),
    web_port: int = typer.Option(8089, "--web-port", help="with --web: the web UI's port"),
    env: str = typer.Option("local", "--env", help="local (tasks are host processes) or docker (tasks are "
                            "containers from the service image: docs/docker.md)"),
    aws_config: Optional[Path] = typer.Option(None, "--aws-config", help="once up, write a gameday.toml for --env aws "
                                              "that describes this environment as an AWS account (docs/aws.md)"),
    force: bool = typer.Option(False, "--force", help="with --aws-config: overwrite an existing file"),
) -> None:
    """Start the embedded local environment (moto per region, ECS tasks, load balancers, alarms,
    SNS -> Lambda, Route 53 DNS, global-table replication) and keep it up until Ctrl-C/SIGTERM.
    With --web, Locust's web UI (load, plus the Chaos tab: inject and roll back faults, watch alarms
    and DNS) starts with it on http://127.0.0.1:8089; Ctrl-C stops Locust first (rolling back the
    tab's faults), then the environment."""
    from gameday.environments.local.stack import LocalStack
    from gameday import state
    from gameday.rundir import new_run_dir

    cfg = _config(config, failover_handler)
    if env not in ("local", "docker"):
        fail(f"--env must be local or docker for `gameday up`, got {env!r}")
    if web:
        _check_web_binding(web_host)   # before anything starts
    if aws_config is not None:
        _aws_config_target(aws_config, force)   # before anything starts too
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    run = run_dir or new_run_dir()
    Path(run).mkdir(parents=True, exist_ok=True)
    progress = (lambda m: print(render.tagged("up", m), file=sys.stderr, flush=True))
    if env == "docker":
        from gameday.environments.docker.stack import DockerStack
        stack = DockerStack(cfg, Path(run), progress=progress)
    else:
        stack = LocalStack(cfg, Path(run), progress=progress)
    state_p = None
    web_proc = None
    try:
        try:
            stack.start()
        except _docker_user_errors() as e:   # Docker missing or not running, image not buildable: the line says what to do
            fail(str(e), 1)
        except Exception as e:  # noqa: BLE001 - one line for the user, details in the log
            fail(f"environment failed to start: {type(e).__name__}: {e} (logs in {run}/logs)", 1)
        ep = stack.endpoints()
        # what start-up made (modules, SDK models, the stack) lives as long as the process: out of
        # the collector's lists, the collections the serving threads trigger walk only their own garbage
        gc.freeze()
        state_p = state.write_state(ep, state_file)
        if aws_config is not None:
            _write_aws_config(stack, aws_config, force)
        if as_json:
            print(json.dumps(ep), flush=True)
        else:
            from gameday.loadgen.runner import LOCUSTFILE

            print(render.endpoints(ep, state_p, LOCUSTFILE), flush=True)
        if web:
            web_proc = _start_web(state_p, Path(run), web_host, web_port, stop)
        while not stop.wait(0.5):
            pass
        print(render.tagged("up", "stopping: rolling back and tearing down"), file=sys.stderr, flush=True)
    finally:
        if web_proc is not None:
            from gameday import procs

            procs.terminate(web_proc, grace_s=15)   # Locust rolls back the Chaos tab's faults as it quits
        stack.stop()
        if state_p is not None:
            state.remove_state(state_p, pid=os.getpid())


def _aws_config_target(path: Path, force: bool) -> None:
    from gameday.environments.local.aws_account import AwsConfigWriteError, check_target

    try:
        check_target(path, force=force)
    except AwsConfigWriteError as e:
        fail(str(e))


def _write_aws_config(stack, path: Path, force: bool) -> None:
    from gameday.environments.local.aws_account import AwsConfigWriteError, write_aws_config

    try:
        write_aws_config(stack, path, force=force)
    except AwsConfigWriteError as e:
        fail(str(e), 1)
    print(render.tagged("up", f"aws config written to {path}: gameday plan -c {path}"), file=sys.stderr, flush=True)


def _check_web_binding(web_host: str) -> None:
    from types import SimpleNamespace

    from gameday.loadgen.chaos_ui import ChaosAuthError, check_binding

    try:
        check_binding(SimpleNamespace(web_host=web_host, chaos_token="", web_login=False))
    except ChaosAuthError as e:
        fail(str(e))


def _start_web(state_p: Path, run: Path, web_host: str, web_port: int, stop: threading.Event):
    """`python -m gameday.loadgen` (Locust's web UI with the Chaos tab) against this environment; if it
    exits, `gameday up` stops too (the user asked for both)."""
    from gameday import procs

    log = run / "locust.log"
    proc = procs.spawn([procs.python(), "-m", "gameday.loadgen", "--gameday-state", str(Path(state_p).resolve()),
                        "--web-host", web_host, "--web-port", str(web_port)], log_path=log)
    print(render.web_ui(web_host, web_port, log), flush=True)

    def watch() -> None:
        code = proc.wait()
        if not stop.is_set():
            print(render.tagged("up", f"Locust's web UI exited (code {code}; see {log}): stopping"), file=sys.stderr,
                  flush=True)
            stop.set()

    threading.Thread(target=watch, name="web-ui-watch", daemon=True).start()
    return proc


def _docker_user_errors() -> tuple[type[Exception], ...]:
    try:
        from gameday.environments.docker.images import ImageBuildError
        from gameday.environments.docker.preflight import DockerUnavailable
    except ImportError:
        return ()
    return (DockerUnavailable, ImageBuildError)


@app.command()
def status(
    config: Optional[Path] = ConfigOpt,
    as_json: bool = typer.Option(False, "--json", help="the raw status object"),
    state_file: Optional[Path] = typer.Option(None, "--state-file"),
    watch: bool = typer.Option(False, "--watch", help="refresh every --interval until Ctrl-C (redrawn in place "
                               "on a terminal, one block per refresh otherwise)"),
    interval: Optional[float] = typer.Option(None, "--interval", min=0.1, help="with --watch: seconds between "
                                             "refreshes (default: the environment's alarm period)"),
) -> None:
    """Show alarm states, the DNS answer, tasks per region and replication lag of the running environment.
    With -c, also say where the running environment differs from that config (regions, service name).
    With --watch, keep showing it (for watching `gameday up` from another terminal)."""
    import requests

    from gameday import state

    cfg = _config(config) if config is not None else None
    try:
        ep = state.read_state(state_file)
    except state.NoEnvironment as e:
        fail(str(e), 1)
    if cfg is not None:
        for line in config_mismatch(cfg, ep):
            typer.echo(render.config_mismatch_warning(line), err=True)
    if watch:
        _watch_status(ep, as_json, interval or float((ep.get("profile") or {}).get("period_s") or 2.0))
    try:
        st = requests.get(ep["control_url"] + "/status", timeout=5).json()
    except requests.RequestException as e:
        fail(f"environment at {ep['control_url']} does not answer: {e}", 1)
    if as_json:
        print(json.dumps(st, indent=2, default=str))
        return
    print(render.status(ep, st))


def _watch_status(ep: dict, as_json: bool, interval: float) -> None:
    """`gameday status --watch`: the same status every `interval` seconds until Ctrl-C. On a terminal
    (and not in CI) the block is redrawn in place; otherwise each refresh is a new block (or JSON line)."""
    import time

    import requests

    from gameday.progress import live_line_wanted

    in_place = not as_json and live_line_wanted(sys.stdout)
    try:
        while True:
            stamp = time.strftime("%H:%M:%S")
            try:
                st = requests.get(ep["control_url"] + "/status", timeout=5).json()
                body = json.dumps(st, default=str) if as_json else render.status(ep, st)
            except (requests.RequestException, ValueError) as e:
                st, body = None, f"environment at {ep['control_url']} does not answer: {e}"
            if as_json:
                print(body if st is not None else json.dumps({"error": body}), flush=True)
            else:
                sys.stdout.write(render.status_refresh(body, stamp, interval, in_place=in_place))
                sys.stdout.flush()
            time.sleep(interval)   # a refresh period for a person watching, not a wait for a condition
    except KeyboardInterrupt:
        raise typer.Exit(0)


def config_mismatch(cfg: GamedayConfig, ep: dict) -> list[str]:
    """What differs between a config and the running environment's endpoints, one line each."""
    out = []
    if list(ep.get("regions", {})) != list(cfg.regions):
        out.append(f"regions are {', '.join(ep.get('regions', {}))}, the config says {', '.join(cfg.regions)}")
    if ep.get("service_name") != cfg.service.name:
        out.append(f"service name is {ep.get('service_name')}, the config says {cfg.service.name}")
    return out


ENVS = ("local", "docker", "aws")
SUITES = ("builtin", "mine", "all")
PYTEST_INI_FILES = ("pytest.ini", ".pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg")


def builtin_suite() -> Path:
    """The built-in resilience suite: the installed package's gameday.scenarios folder."""
    import gameday.scenarios

    return Path(gameday.scenarios.__file__).resolve().parent


def user_suite(cfg: GamedayConfig, cli_paths: list[str]) -> list[Path]:
    """The team's own scenarios: paths named on the command line, else [suite] paths that exist.
    The built-in suite itself (a gameday checkout's scenarios/) is never counted as the team's."""
    builtin = builtin_suite()
    given = cli_paths or [p for p in cfg.suite.paths if Path(p).exists()]
    return [Path(p) for p in given if Path(p.split("::")[0]).resolve() != builtin]


def _split_pytest_args(args: list[str]) -> tuple[list[str], list[str]]:
    """(existing paths, everything else) among the extra arguments: a path (or path::test) is a
    scenario location of the team's, anything else goes to pytest as it is."""
    paths, rest = [], []
    for a in args:
        (paths if not a.startswith("-") and Path(a.split("::")[0]).exists() else rest).append(a)
    return paths, rest


def resolve_suite(suite: Optional[str], cfg: GamedayConfig, cli_paths: list[str]) -> tuple[str, list[str]]:
    """(the suite chosen, the pytest paths to collect), or a one-line error (exit 2)."""
    builtin = builtin_suite()
    if (Path("gameday") / "pytest_plugin.py").is_file() and Path.cwd().resolve() != builtin.parent:
        # another checkout of gameday than the installed one: its scenarios/ would be collected as a
        # team's suite beside the installed built-ins, under the same module names
        fail(f"{Path.cwd()} is a checkout of gameday, but gameday is installed from {builtin.parent}: "
             f"run `pip install -e .` here first (or run gameday from that checkout)")
    mine = user_suite(cfg, cli_paths)
    chosen = suite or cfg.suite.default or ("all" if mine else "builtin")
    if chosen not in SUITES:
        fail(f"--suite must be one of {', '.join(SUITES)}, got {chosen!r}")
    if chosen == "mine" and not mine:
        fail(f"--suite mine: no scenarios of your own: none of {', '.join(cfg.suite.paths)} exists here "
             f"({Path.cwd()}); `gameday init` writes an example, or name paths on the command line")
    paths = ([str(builtin_suite())] if chosen != "mine" else []) + ([str(p) for p in mine] if chosen != "builtin" else [])
    return chosen, paths


def pytest_argv(paths: list[str], run: Path, env: str, *, k: Optional[str], config: Optional[Path],
                failover_handler: Optional[str], extra: list[str], builtin_only: bool = False) -> list[str]:
    """pytest over the suite, from the current directory: its pytest configuration (if any) applies,
    gameday's plugin comes from its entry point, and nothing is written into the installed package.
    builtin_only (gameday's own scenarios, none of yours): without Hypothesis's pytest plugin, where
    it is installed: none of them uses it, and loading it cost each run ~0.7 s of CPU."""
    unused = ["-p", "no:hypothesispytest"] if builtin_only else []
    argv = [sys.executable, "-m", "pytest", *paths, "-p", "no:locust", "-p", "no:cacheprovider", *unused, "-v",
            "--rootdir", str(Path.cwd()), "--timeout", "300",
            "--run-dir", str(run.resolve()), "--junitxml", str((run / "junit.xml").resolve()), "--env", env]
    ini = next((f for f in PYTEST_INI_FILES if Path(f).is_file()), None)
    if ini is not None:
        argv += ["-c", ini]
    if importlib.util.find_spec("xdist") is not None:
        # scenarios share one session-scoped environment and run in order: never across workers,
        # even where the directory's pytest configuration asks for -n (gameday's own does)
        argv += ["-n", "0"]
    if k:
        argv += ["-k", k]
    if config:
        argv += ["--config", str(config.resolve())]
    if failover_handler:
        argv += ["--failover-handler", failover_handler]
    return argv + extra


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    ctx: typer.Context,
    k: Optional[str] = typer.Option(None, "-k", help="only scenarios matching this pytest -k expression"),
    env: str = typer.Option("local", "--env", help="environment: local, docker (docs/docker.md) or aws (docs/aws.md)"),
    suite: Optional[str] = typer.Option(None, "--suite", help="builtin (gameday's scenarios), mine (your own: "
                                        "[suite] paths, default ./scenarios, or paths given as arguments) or all; "
                                        "default: all when you have scenarios of your own, else builtin"),
    config: Optional[Path] = ConfigOpt,
    failover_handler: Optional[str] = HandlerOpt,
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="default: a new reports/runs/<run-id>"),
    history: Optional[Path] = typer.Option(None, "--history", help="append one line per scenario to this history "
                                           "file (default: reports/history.jsonl, for runs in reports/runs/ only; a "
                                           "--run-dir elsewhere appends only when --history is given)"),
    quiet: bool = typer.Option(False, "--quiet", help="print only the verdict table (pytest's output goes to "
                               "RUN_DIR/pytest.log)"),
    verbose: bool = typer.Option(False, "--verbose", help="tell every timeline event as it happens (and the "
                                 "clients' counts per second), not only the scenario's story"),
) -> None:
    """Run the resilience suite (pytest underneath) into a run directory; exit code as pytest's.
    While a scenario runs, its story is told as it happens (load, faults, threshold, alarm, Lambda,
    DNS change, clients following, checks, verdict), with a live status line on a terminal (not
    when CI=true). Paths given as arguments are your own scenarios; other extra arguments go to pytest."""
    import subprocess

    from gameday.rundir import new_run_dir

    # everything is checked before anything is created: a bad option leaves no empty run directory
    if env not in ENVS:
        fail(f"--env must be one of {', '.join(ENVS)}, got {env!r}")
    if quiet and verbose:
        fail("--quiet and --verbose exclude each other")
    cfg = _config(config, failover_handler)
    cli_paths, extra = _split_pytest_args(list(ctx.args))
    if quiet or verbose:
        extra = ["--gameday-progress", "quiet" if quiet else "verbose", *extra]
    chosen, paths = resolve_suite(suite, cfg, cli_paths)
    run = run_dir or new_run_dir()
    run.mkdir(parents=True, exist_ok=True)
    argv = pytest_argv(paths, run, env, k=k, config=config, failover_handler=failover_handler, extra=extra,
                       builtin_only=chosen == "builtin")
    typer.echo(render.run_started(run, chosen, paths), err=True)
    rc = _call_dying_with_us(argv, log=run / "pytest.log" if quiet else None)
    if quiet and rc not in (0, 1):   # not a verdict (usage error, interrupted, internal error): say why
        typer.echo(_tail_of(run / "pytest.log"), err=True)
    try:
        from gameday.reports.finalize import finalize_run
        out = finalize_run(run, env=env)
        summary = json.loads((run / "summary.json").read_text())
        typer.echo(render.verdict(summary))
        typer.echo(render.tagged("run", f"report: {out}"), err=True)
    except Exception as e:  # noqa: BLE001 - the suite's verdict stands even if rendering fails
        typer.echo(render.warning(f"report not written: {type(e).__name__}: {e}"), err=True)
    else:
        _append_history(summary, run, history, default_run_dir=run_dir is None)
    raise typer.Exit(rc)


def _tail_of(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return f"(no {path})"


def _call_dying_with_us(argv: list[str], log: Optional[Path] = None) -> int:
    """Run pytest in our process group (Ctrl-C reaches it as it reaches us: it rolls back and stops),
    with PR_SET_PDEATHSIG: if `gameday run` is SIGKILLed, pytest gets SIGTERM, rolls its faults back
    and ends instead of running the rest of the suite unattended. With `log`, pytest's output goes there."""
    import subprocess

    from gameday.procs import set_parent_death_signal

    out = open(log, "wb") if log is not None else None
    try:
        proc = subprocess.Popen(argv, preexec_fn=lambda: set_parent_death_signal(signal.SIGTERM),
                                stdout=out, stderr=subprocess.STDOUT if out else None)
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:
                continue  # pytest got the same Ctrl-C: wait for it to roll back and report
    finally:
        if out is not None:
            out.close()


def _append_history(summary: dict, run: Path, history: Optional[Path], *, default_run_dir: bool) -> None:
    """The run's line per scenario in the trend's history (reports/trend.py); a warning if it cannot."""
    from gameday.rundir import RUNS_DIR
    from gameday.reports.trend import HISTORY_PATH, append_history

    if history is None:
        # runs elsewhere (tests' and benchmarks' temporary runs, mutants) stay out of the project's trend
        if not (default_run_dir or run.resolve().parent == RUNS_DIR.resolve()):
            return
        history = HISTORY_PATH
    try:
        lines = append_history(summary, history, run_dir=run)
        typer.echo(render.history_appended(len(lines), history), err=True)
    except Exception as e:  # noqa: BLE001 - history is a convenience, the run's verdict stands
        typer.echo(render.warning(f"history not appended to {history}: {type(e).__name__}: {e}"), err=True)


@app.command()
def report(
    run_dir: Path = typer.Argument(Path("reports/runs/latest"), help="a run directory (default: the latest run)"),
    trend: bool = typer.Option(False, "--trend", help="instead of one run: chart failover, RTO, error rate and lost "
                               "writes per scenario over the runs in --history into --out, and flag regressions"),
    history: Path = typer.Option(Path("reports/history.jsonl"), "--history", help="with --trend: the run history"),
    out: Path = typer.Option(Path("reports/trend.html"), "--out", help="with --trend: where to write the page"),
) -> None:
    """Re-check a stored run (the data checkers re-run on its history and replicas, no environment
    needed) and re-render summary.json, timeline.jsonl and report.html. Exit 0 if it passed, 1 if not,
    2 if the run directory is unreadable (one line naming the file).

    With --trend: write trend.html from the history that `gameday run` appends. A regression is a
    scenario's newest failover, RTO or error rate more than 20% above the median of its previous
    7 runs, or lost acknowledged writes after runs that lost none. Exit 0 if no regression,
    3 if one is flagged (each listed), 2 if the history is unreadable."""
    from gameday.reports.finalize import finalize_run
    from gameday.reports.rundata import ReportError

    if trend:
        _trend(history, out)
    try:
        page = finalize_run(run_dir)
    except ReportError as e:
        fail(str(e))
    except Exception as e:  # noqa: BLE001 - stored data the loaders did not foresee: still one line
        fail(f"{run_dir}: cannot report on this run: {type(e).__name__}: {e}")
    summary = json.loads((page.parent / "summary.json").read_text())
    typer.echo(render.verdict(summary))
    typer.echo(f"report: {page}")
    raise typer.Exit(0 if summary["passed"] else 1)


def _trend(history: Path, out: Path) -> None:
    from gameday.reports.rundata import ReportError
    from gameday.reports.trend import load_history, write_trend

    try:
        t = load_history(history)
        page = write_trend(t, out)
    except ReportError as e:
        fail(str(e))
    except Exception as e:  # noqa: BLE001 - one line, as for a run directory
        fail(f"{history}: cannot chart the trend: {type(e).__name__}: {e}")
    for w in t.warnings:
        typer.echo(render.warning(w), err=True)
    if t.scenarios:
        typer.echo(render.trend(t.scenarios))
    typer.echo(f"trend: {page}")
    raise typer.Exit(3 if t.regressions else 0)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []})
def load(ctx: typer.Context) -> None:
    """Exploratory load with Locust's web UI (on 127.0.0.1:8089) against the running `gameday up`:
    same as `python -m gameday.loadgen ARGS`; `gameday load --help` lists Locust's and gameday's options
    (--surge-region, --surge-rate 1.5x, --follower-rate, --op-mix, --shape, --headless, ...).
    Over several hosts: `gameday load --master --expect-workers N [--run-dir D] [--bind-host H] [--port P]`
    and `gameday load --worker --master-host H [--master-port P]` (gameday/load_cli.py, docs/scaling.md)."""
    from gameday.load_cli import main as load_main

    raise typer.Exit(load_main(list(ctx.args)) or 0)


@app.command()
def rollback(
    run_dir: Path = typer.Argument(Path("reports/runs/latest"), help="the run whose faults to roll back (default: the latest run)"),
    state_file: Optional[Path] = typer.Option(None, "--state-file", help="the environment's state file (default: RUN_DIR/env/state.json, else .gameday/local.json)"),
) -> None:
    """Roll back, from RUN_DIR/journal.jsonl, every fault injected and never rolled back (after a
    SIGKILLed run), against the running environment. One line per fault."""
    from gameday.faults.restore import rollback_run

    rc = rollback_run(run_dir, attach=lambda run, open_: _attach_for_rollback(run, open_, state_file),
                      echo=typer.echo, err=lambda m: typer.echo(m, err=True))
    raise typer.Exit(rc)


def _attach_for_rollback(run: Path, open_faults: list, state_file: Optional[Path]):
    """The live environment a run's open faults were applied to (the journal says which kind):
    a real AWS stack outlives the process that broke it, so come back to it (account checked
    again); a local/docker one is found from its state file (NoLiveEnvironment when it is gone)."""
    from gameday.faults.restore import find_environment

    if any((jf.env or {}).get("kind") == "aws" for jf in open_faults):
        from gameday.environments.aws import attach_for_rollback

        return attach_for_rollback(run)
    from gameday.environments.local import LocalEnvironment

    return LocalEnvironment.attach(find_environment(run, open_faults, state_file))


@app.command()
def init(
    directory: Path = typer.Argument(Path("."), help="where to write (default: the current directory)"),
) -> None:
    """Start your own repository on gameday: write gameday.toml (the defaults, commented) with [failover]
    pointing at an example failover function (failover/failover_lambda.py), scenarios/test_example.py
    (a small scenario using the fixtures: docs/scenarios.md) and .github/workflows/gameday-nightly.yml.
    Never overwrites a file: one line per file written or skipped. Then `gameday run` passes there."""
    from gameday.init import init as write_init

    if directory.exists() and not directory.is_dir():
        fail(f"{directory} is not a directory")
    typer.echo(f"gameday init in {directory.resolve()}:")
    try:
        written = write_init(directory, echo=typer.echo)
    except OSError as e:
        fail(f"cannot write in {directory}: {e}", 1)
    typer.echo(f"{len(written)} file(s) written. Next: `gameday run` (the built-in suite and scenarios/), "
               f"then replace failover/failover_lambda.py with your own function (docs/failover.md).")


@app.command()
def plan(
    config: Optional[Path] = ConfigOpt,
    env: str = typer.Option("aws", "--env", help="the environment whose guardrails judge the plan (aws)"),
    k: Optional[str] = typer.Option(None, "-k", help="only scenarios whose name contains this"),
    offline: bool = typer.Option(False, "--offline", help="no AWS calls at all: skip the account check, discovery "
                                 "and preflight (caps are judged on the config's task counts)"),
) -> None:
    """Print what a run on the aws environment would do: scenarios, faults and their targets, load,
    caps; with the account check, discovery and preflight (read-only). Changes nothing.
    Exit 0 ready, 1 preflight problems, 2 a scenario over a cap (named) or a refused account."""
    from gameday.environments.aws import AccountRefused, AwsConfigError, AwsEnvironment, PreflightFailed
    from gameday.environments.aws.plan import build_plan, plan_exit_code, render_plan

    if env != "aws":
        fail(f"`gameday plan` judges a run against the aws environment's guardrails; --env {env} has none")
    cfg = _config(config)
    try:
        aws_env = AwsEnvironment(cfg)
    except AwsConfigError as e:
        fail(str(e))
    problems: list = []
    if not offline:
        try:
            aws_env.start()
        except AccountRefused as e:
            fail(str(e))
        except PreflightFailed as e:
            problems = e.problems
    the_plan = build_plan(aws_env, k)
    typer.echo(render_plan(aws_env, the_plan, problems))
    raise typer.Exit(plan_exit_code(the_plan, problems))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
