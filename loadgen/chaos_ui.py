"""The "Chaos" tab of Locust's web UI: every fault of gameday.faults with its parameters, inject
and roll back buttons, the environment's live state and a timeline of fault / alarm / DNS events.
`register()`, called by the locustfile on Locust's `init` event, adds it through Locust's
extension points (nothing here imports Locust at module level). Faults go through
faults.Nemesis, journaled exactly like a scenario's, and are rolled back when Locust quits. The
endpoints run inside Locust (gevent-patched): they reach the environment only over HTTP
(LocalEnvironment.attach: its control API and the AWS endpoint).

The HTTP API (/chaos/...), authentication off loopback, what happens to the faults and how the
tab is built: docs/web-ui.md.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import secrets
import threading
import time
from collections import deque
from pathlib import Path

from gameday.aws import ROUTE53_HOME
from gameday.environments.base import CapabilityMissing
from gameday.faults.base import Fault, FaultError, RegionField, fault_classes, field_choices, field_parts, parse_fault
from gameday.faults.nemesis import ACTIVE, PENDING, ROLLBACK_FAILED, Nemesis, RollbackFailed
from gameday.config import GamedayConfig
from gameday.loadgen.plan import LoadInputError, parse_bool

log = logging.getLogger("gameday.chaos")

STATIC_DIR = Path(__file__).with_name("static")
TAB = {"key": "chaos", "title": "Chaos"}
SCENARIO = "chaos-ui"                 # the journal's and the timeline's name for faults injected here
TOKEN_ENV = "GAMEDAY_WEB_TOKEN"
STATUS_TIMEOUT_S = 2.0
STATE_CACHE_S = 0.5                   # several open tabs polling every second share one status call
TIMELINE_MAX = 500
TIMELINE_KINDS = ("fault", "alarm", "dns_change", "lambda_invocation")


class ChaosAuthError(LoadInputError):
    """The web UI would be reachable off loopback with nothing guarding the fault endpoints."""


# -- binding and authentication ---------------------------------------------------------------------------

def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost"; "", "*", 0.0.0.0 and any other name are not."""
    h = (host or "").strip().strip("[]")
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def token_from(opts) -> str:
    return (getattr(opts, "chaos_token", "") or os.environ.get(TOKEN_ENV, "")).strip()


def check_binding(opts) -> None:
    """Called when the options are parsed: off loopback, the web UI needs a token (gameday's
    login: Locust's login page, password = the token) or Locust's --web-login with the user's
    own login provider. ChaosAuthError (one line) otherwise."""
    if getattr(opts, "headless", False) or getattr(opts, "worker", False):
        return
    host = getattr(opts, "web_host", "127.0.0.1")
    if is_loopback(host) or token_from(opts) or getattr(opts, "web_login", False):
        return
    raise ChaosAuthError(
        f"--web-host {host or '*'} is not loopback: the web UI (and its fault endpoints) would be open to the "
        f"network; give a token (--chaos-token, or ${TOKEN_ENV}; e.g. {TOKEN_ENV}=$(openssl rand -hex 16)) "
        f"or use Locust's --web-login with your own login provider")


# -- the fault schema ---------------------------------------------------------------------------------------

_FORM_TYPES = {bool: "bool", int: "int", float: "float"}


def _field_spec(cls: type[Fault], name: str, regions: tuple[str, ...]) -> dict:
    """One form field, read from the fault model's declaration: type, default, choices."""
    info = cls.model_fields[name]
    base, meta, optional = field_parts(cls, name)
    choices: list | None = list(field_choices(cls, name)) or None
    region = next((m for m in meta if isinstance(m, RegionField)), None)
    if region is not None and regions:
        # "*" (every region) and Route 53's home (us-east-1, an API endpoint even when unused)
        choices = ["*", *dict.fromkeys([*regions, ROUTE53_HOME])] if region.wildcard else list(regions)
    required = info.is_required()
    return {"name": name, "type": _FORM_TYPES.get(base, "str"), "optional": optional, "required": required,
            "default": None if required else info.default, "choices": choices}


def fault_schema(regions: tuple[str, ...] = ()) -> list[dict]:
    """Every fault kind (the models of gameday.faults): kind, description, fields with type,
    default, whether it may be empty, and choices. JSON-serialisable; what the forms are built from."""
    return [{"kind": kind, "doc": " ".join((cls.__doc__ or "").split()), "capabilities": list(cls.capabilities),
             "fields": [_field_spec(cls, n, regions) for n in cls.model_fields if n != "kind"]}
            for kind, cls in fault_classes().items()]


def fault_from_form(kind: str, params: dict) -> Fault:
    """The fault a form (strings, from the page or curl) or a JSON body describes: "" and null
    mean "not given" (the field's default), text is read as the field's type ("2", "0.5",
    "false"); FaultError names a bad value."""
    if not isinstance(params, dict):
        raise FaultError(f"{kind}: params must be an object, got {type(params).__name__}")
    given = {name: value.strip() if isinstance(value, str) else value for name, value in params.items()
             if value is not None and not (isinstance(value, str) and not value.strip())}
    return parse_fault({**given, "kind": kind}, strict=False)


# -- the panel: a nemesis, the environment's state, a timeline ------------------------------------------------

def timeline_entry(e: dict, address_region: dict[str, str]) -> dict | None:
    """An environment event as one timeline mark ({t, kind, label, region?, ok?}), or None."""
    kind = e.get("kind")
    t = e.get("time")
    if kind == "alarm":
        return {"t": t, "kind": "alarm", "region": e.get("region"), "state": e.get("new"),
                "label": f"{e.get('alarm')}: {e.get('old')} -> {e.get('new')}"}
    if kind == "dns_change":
        new = e.get("new") or []
        new_l = new if isinstance(new, list) else [new]
        regions = [address_region.get(a, a) for a in new_l]
        return {"t": t, "kind": "dns", "region": regions[0] if regions else None,
                "label": f"DNS {e.get('name')} -> {', '.join(str(a) for a in new_l)} ({', '.join(map(str, regions))})"}
    if kind == "fault":
        ok = e.get("ok", True)
        return {"t": t, "kind": "fault", "ok": ok, "id": e.get("id"),
                "label": f"{e.get('action')} {e.get('fault_kind')} {e.get('target')}"
                         + ("" if ok else f" FAILED: {e.get('error')}")
                         + (f" ({e.get('scenario')})" if e.get("scenario") else "")}
    if kind == "lambda_invocation":
        return {"t": t, "kind": "lambda", "ok": e.get("outcome") == "ok",
                "label": f"failover Lambda invoked: {e.get('outcome')}"
                         + (f" ({e.get('duration_s')}s)" if e.get("duration_s") is not None else "")}
    return None


class ChaosPanel:
    """What the /chaos/ routes do, without Flask or Locust: testable on its own."""

    def __init__(self, endpoints: dict, journal_dir: str | Path, *, env=None):
        from gameday.environments.local import LocalEnvironment

        self.endpoints = endpoints
        self.env = env or LocalEnvironment.attach(endpoints)
        self.journal_dir = Path(journal_dir)
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        # `gameday rollback <chaos dir>` finds the environment the faults were applied to here
        (self.journal_dir / "env").mkdir(exist_ok=True)
        (self.journal_dir / "env" / "state.json").write_text(json.dumps(endpoints, indent=2))
        self.nemesis = Nemesis(self.env, self.journal_dir / "journal.jsonl", scenario=SCENARIO,
                               handle_signals=False)  # Locust owns the signals: it rolls back on quitting
        self.regions = tuple(endpoints.get("regions") or {})
        self.address_region = {v["lb_address"]: r for r, v in (endpoints.get("regions") or {}).items()}
        self._lock = threading.Lock()
        self._events_seq = 0
        self._timeline: deque[dict] = deque(maxlen=TIMELINE_MAX)
        self._cached: tuple[float, dict] | None = None
        self.load_state: dict = {}

    # -- faults ----------------------------------------------------------------------------------
    def schema(self) -> list[dict]:
        return fault_schema(self.regions)

    def inject(self, kind: str, params: dict) -> dict:
        """FaultError / CapabilityMissing (bad request), or the fault's record (inject raised: re-raised)."""
        fault = fault_from_form(kind, params)
        rec = self.nemesis.inject(fault)
        self._cached = None
        return self._record(rec)

    def rollback(self, fault_id: str) -> dict:
        try:
            rec = self.nemesis.rollback(fault_id)
        except RollbackFailed as e:
            rec = e.records[0]
        self._cached = None
        return self._record(rec)

    def rollback_all(self) -> list[dict]:
        done = self.nemesis.rollback_all(raise_on_failure=False)
        self._cached = None
        return [self._record(r) for r in done]

    def close(self) -> list[dict]:
        """Roll back everything still in effect (Locust is quitting)."""
        active = self.nemesis.active()
        if active:
            log.info("gameday chaos: rolling back %d fault(s) before Locust exits", len(active))
        return self.rollback_all()

    @staticmethod
    def _record(rec) -> dict:
        d = rec.as_dict()
        now = time.time()
        d["age_s"] = round(now - rec.injected_at, 1) if rec.injected_at else None
        d["active"] = rec.state in (PENDING, ACTIVE, ROLLBACK_FAILED)
        d["injected_ts"], d["rolled_back_ts"] = rec.injected_at, rec.rolled_back_at
        return d

    # -- state -----------------------------------------------------------------------------------
    def add_mark(self, kind: str, label: str, **extra) -> None:
        """A mark of this process's own (load started / stopped) on the timeline."""
        with self._lock:
            self._timeline.append({"t": time.time(), "kind": kind, "label": label, **extra})

    def _poll_events(self) -> None:
        try:
            events = self.env.control("GET", f"/events?since={self._events_seq}", timeout_s=STATUS_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001 - the state says the environment does not answer
            log.debug("events: %s", e)
            return
        for e in events if isinstance(events, list) else []:
            self._events_seq = max(self._events_seq, int(e.get("seq", 0)))
            if e.get("kind") in TIMELINE_KINDS:
                mark = timeline_entry(e, self.address_region)
                if mark:
                    self._timeline.append(mark)

    def state(self) -> dict:
        with self._lock:
            now = time.monotonic()
            if self._cached and now - self._cached[0] < STATE_CACHE_S:
                return self._cached[1]
            st = self._state()
            self._cached = (time.monotonic(), st)
            return st

    def _state(self) -> dict:
        ep = self.endpoints
        out: dict = {"time": time.time(), "service_name": ep.get("service_name"), "error": None,
                     "journal": str(self.journal_dir / "journal.jsonl"), "load": dict(self.load_state),
                     "profile": ep.get("profile")}
        try:
            st = self.env.control("GET", "/status", timeout_s=STATUS_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001 - shown in the panel; the page keeps polling
            st = {}
            out["error"] = f"the environment at {ep.get('control_url')} does not answer: {type(e).__name__}: {e}"
        answers = (st.get("dns") or {}).get("answers") or {}
        answer = answers.get(ep.get("record_name")) or answers.get(ep.get("service_name")) or []
        out["dns"] = {"name": ep.get("service_name"), "answer": answer,
                      "regions": [self.address_region.get(a, "?") for a in answer],
                      "refresh_failures": (st.get("dns") or {}).get("refresh_failures")}
        regions = []
        for r in self.regions:
            alarms = (st.get("alarms") or {}).get(r, {})
            ecs = (st.get("ecs") or {}).get(r, {})
            lb = (st.get("load_balancers") or {}).get(r, {})
            regions.append({
                "region": r, "lb_address": ep["regions"][r]["lb_address"],
                "alarms": [{"key": GamedayConfig.alarm_key(n, r), "name": n, "state": a.get("state"), "since": a.get("since")}
                           for n, a in alarms.items()],
                "tasks": {"running": ecs.get("running"), "desired": ecs.get("desired"), "pending": ecs.get("pending")},
                "healthy": lb.get("healthy"), "blocked": lb.get("blocked"),
                "unavailable_azs": ecs.get("unavailable_azs") or [],
                "dns": ep["regions"][r]["lb_address"] in answer,
            })
        out["regions"] = regions
        out["replication"] = [{"direction": d, "lag_s": v.get("lag_s"), "pending": v.get("pending"),
                               "paused": v.get("paused")}
                              for d, v in (st.get("replication") or {}).items() if isinstance(v, dict)]
        out["control_planes_blocked"] = (st.get("router") or {}).get("blocked_control_planes") or []
        out["faults"] = [self._record(r) for r in self.nemesis.all_records()]
        out["active"] = sum(1 for f in out["faults"] if f["active"])
        if st:
            self._poll_events()
        out["timeline"] = list(self._timeline)
        return out


# -- Locust side ---------------------------------------------------------------------------------------------

def default_journal_dir(endpoints: dict) -> Path:
    base = Path(endpoints.get("run_dir") or ".")
    return base / "chaos" / time.strftime("%Y%m%d-%H%M%S", time.gmtime())


def register(environment, web_ui, endpoints: dict) -> ChaosPanel:
    """Add the Chaos tab and the /chaos/ routes to Locust's web UI (called on Locust's init event)."""
    opts = environment.parsed_options
    token = token_from(opts)
    if hasattr(opts, "chaos_token"):
        opts.chaos_token = ""   # parsed options travel to workers and into reports: keep the secret out
    host = getattr(opts, "web_host", "127.0.0.1")
    journal_dir = Path(getattr(opts, "chaos_dir", "") or default_journal_dir(endpoints))
    panel = ChaosPanel(endpoints, journal_dir)
    rollback_on_stop = parse_bool(getattr(opts, "chaos_rollback_on_stop", "false") or "false",
                                  "--chaos-rollback-on-stop")
    app = web_ui.app
    # a token or --web-login given on loopback is enforced too: whoever set one wants it
    guard = _Guard(web_ui, token=token,
                   required=not is_loopback(host) or bool(token) or bool(getattr(opts, "web_login", False)))
    if guard.required and token:
        guard.install_login(app)
    prefix = (getattr(opts, "web_base_path", "") or "").rstrip("/") + "/chaos"   # Locust's --web-base-path
    app.register_blueprint(_blueprint(panel, guard, environment, prefix))
    _add_tab(web_ui)
    _follow_locust(panel, rollback_on_stop)
    log.info("gameday chaos: Chaos tab on; faults journaled in %s%s", journal_dir / "journal.jsonl",
             f" (on {host or '*'}: login required)" if guard.required else "")
    return panel


def _blueprint(panel: ChaosPanel, guard: "_Guard", environment, prefix: str):
    """The /chaos/ routes: the page, the fault schema, the state, inject and roll back, login."""
    from flask import Blueprint, jsonify, redirect, request, send_from_directory, session, url_for

    bp = Blueprint("gameday_chaos", __name__, url_prefix=prefix, static_folder=str(STATIC_DIR),
                   static_url_path="/static")

    @bp.before_request
    def _check():
        if request.endpoint in ("gameday_chaos.static", "gameday_chaos.login_submit"):
            return None
        return guard.refuse(request)

    @bp.get("/")
    def page():
        return send_from_directory(STATIC_DIR, "chaos.html")

    @bp.get("/faults")
    def faults_schema():
        return jsonify({"faults": panel.schema(), "regions": list(panel.regions)})

    @bp.get("/state")
    def state():
        st = dict(panel.state())
        runner = environment.runner
        st["load"] = {**st.get("load", {}), "state": getattr(runner, "state", None),
                      "users": getattr(runner, "user_count", None),
                      "rps": round(runner.stats.total.current_rps, 1) if runner else None}
        return jsonify(st)

    @bp.post("/inject")
    def inject():
        return _inject(panel, request.get_json(silent=True))

    @bp.post("/rollback/<fault_id>")
    def rollback(fault_id: str):
        try:
            rec = panel.rollback(fault_id)
        except KeyError as e:
            return jsonify({"error": str(e).strip("'\"")}), 404
        return jsonify(rec), (200 if rec["state"] != ROLLBACK_FAILED else 502)

    @bp.post("/rollback-all")
    def rollback_all():
        return jsonify({"rolled_back": panel.rollback_all()})

    @bp.post("/login")
    def login_submit():
        return guard.login_submit(request, session, redirect, url_for)

    return bp


def _inject(panel: ChaosPanel, body):
    """POST /chaos/inject {"kind", "params"}: 201 and the fault's record, 400 for a fault that
    cannot be built or does not fit the environment, 502 if applying it failed."""
    from flask import jsonify

    if not isinstance(body, dict) or not isinstance(body.get("kind"), str):
        return jsonify({"error": 'expected JSON {"kind": "<fault kind>", "params": {...}}'}), 400
    try:
        rec = panel.inject(body["kind"], body.get("params") or {})
    except (FaultError, CapabilityMissing) as e:
        return jsonify({"error": str(e)}), 400
    except Exception as e:  # noqa: BLE001 - the nemesis journaled it and rolled back what applied
        return jsonify({"error": f"inject failed: {type(e).__name__}: {e}"}), 502
    log.info("gameday chaos: injected %s %s (%s) from the web UI", rec["kind"], rec["target"], rec["id"])
    return jsonify(rec), 201


def _add_tab(web_ui) -> None:
    """The tab in Locust's React UI, and the script that mounts its content into the index page."""
    from flask import Response, request

    web_ui.template_args["extendedTabs"] = [*web_ui.template_args.get("extendedTabs", []), TAB]
    script = b'<script src="./chaos/static/chaos.js" defer></script>'

    @web_ui.app.after_request
    def _add_panel_script(response: Response):
        if request.endpoint == "locust.index" and response.status_code == 200 and response.mimetype == "text/html":
            body = response.get_data()
            if script not in body:
                response.set_data(body.replace(b"</body>", script + b"\n</body>", 1))
        return response


def _follow_locust(panel: ChaosPanel, rollback_on_stop: bool) -> None:
    """Load start / stop marks on the timeline; faults rolled back when Locust quits (and when
    the load stops, with --chaos-rollback-on-stop)."""
    from locust import events

    @events.test_start.add_listener
    def _load_started(environment, **_kw):
        panel.add_mark("load", "load started")

    @events.test_stop.add_listener
    def _load_stopped(environment, **_kw):
        panel.add_mark("load", "load stopped")
        if rollback_on_stop and panel.nemesis.active():
            panel.rollback_all()

    @events.quitting.add_listener
    def _quitting(environment, **_kw):
        panel.close()


class _Operator:
    """A logged-in user of gameday's token login (flask_login's user protocol)."""

    is_authenticated = True
    is_active = True
    is_anonymous = False

    def __init__(self, name: str):
        self.id = name

    def get_id(self) -> str:
        return self.id


class _Guard:
    """Who may use the chaos endpoints: anyone on loopback; off loopback, a bearer token or a
    session logged in through Locust's login page. Always: no cross-origin state changes."""

    def __init__(self, web_ui, *, token: str, required: bool):
        self.web_ui = web_ui
        self.token = token
        self.required = required

    def install_login(self, app) -> None:
        """Locust's web login with gameday's provider: Locust's login page, password = the token.
        It then guards Locust's own routes (swarm, stop, stats) too."""
        from flask_login import LoginManager

        if not self.web_ui.web_login:
            lm = LoginManager()
            lm.init_app(app)
            lm.login_view = "locust.login"
            self.web_ui.login_manager = lm
            self.web_ui.web_login = True
        app.config["SECRET_KEY"] = app.config.get("SECRET_KEY") or secrets.token_hex(32)
        app.config.setdefault("SESSION_COOKIE_SAMESITE", "Strict")
        app.config.setdefault("SESSION_COOKIE_HTTPONLY", True)
        self.web_ui.login_manager.user_loader(lambda uid: _Operator(uid))
        self.web_ui.auth_args = {**self.web_ui.auth_args, "username_password_callback": "./chaos/login",
                                 "info": "gameday: any user name; the password is the chaos token "
                                         f"(--chaos-token or ${TOKEN_ENV})"}

    def _token_ok(self, given: str) -> bool:
        return bool(self.token) and hmac.compare_digest(given.encode(), self.token.encode())

    def authenticated(self, request) -> bool:
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and self._token_ok(auth[7:].strip()):
            return True
        if self.web_ui.web_login:
            from flask_login import current_user

            return bool(current_user and current_user.is_authenticated)
        return False

    def refuse(self, request):
        """None (go on), or the refusal as a Flask response."""
        from flask import jsonify

        if request.method not in ("GET", "HEAD", "OPTIONS"):
            origin = request.headers.get("Origin")
            if origin and origin != "null" and origin.split("://", 1)[-1] != request.host:
                return jsonify({"error": f"cross-origin request from {origin} refused"}), 403
        if not self.required:
            # bound to loopback: the Host check stops a DNS-rebinding page from driving the faults
            if not is_loopback(request.host.rsplit(":", 1)[0]):
                return jsonify({"error": f"host {request.host!r} refused: the web UI is bound to loopback"}), 403
            return None
        if self.authenticated(request):
            return None
        return jsonify({"error": "authentication required: log in on the web UI, or send "
                                 "'Authorization: Bearer <token>'"}), 401

    def login_submit(self, request, session, redirect, url_for):
        from flask_login import login_user

        if self._token_ok(request.form.get("password", "")):
            login_user(_Operator((request.form.get("username") or "operator").strip()[:64] or "operator"))
            return redirect(url_for("locust.index"))
        session["auth_error"] = "wrong token"
        return redirect(url_for("locust.login"))
