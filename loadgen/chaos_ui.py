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

import dataclasses
import hmac
import ipaddress
import json
import logging
import os
import secrets
import sys
import threading
import time
from collections import deque
from pathlib import Path

from gameday.faults.base import _REGISTRY, CapabilityMissing, FaultError, fault_from_record, fault_kinds
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

# parameters whose values come from a fixed set (the faults' own tuples)
_CHOICES_BY_FIELD: dict[tuple[str, str], str] = {
    ("block_region", "mode"): "gameday.faults.network:BLOCK_MODES",
    ("api_fault", "effect"): "gameday.faults.api:API_EFFECTS",
    ("lambda_fault", "mode"): "gameday.faults.lambda_fault:LAMBDA_MODES",
}
_REGION_FIELDS = ("region", "source", "destination")


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

def _field_type(annotation) -> tuple[str, bool]:
    """('str' | 'int' | 'float' | 'bool', optional) from a dataclass annotation (a string here)."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    parts = [p.strip() for p in text.replace("typing.", "").replace("Optional[", "").rstrip("]").split("|")]
    optional = "None" in parts or text.startswith("Optional[")
    base = next((p for p in parts if p != "None"), "str")
    return (base if base in ("str", "int", "float", "bool") else "str"), optional


def _choices(kind: str, name: str, regions: tuple[str, ...]) -> list[str] | None:
    ref = _CHOICES_BY_FIELD.get((kind, name))
    if ref:
        import importlib

        module, attr = ref.split(":")
        return list(getattr(importlib.import_module(module), attr))
    if name in _REGION_FIELDS and regions:
        out = list(regions)
        if kind == "api_fault":
            # API faults may name every region, and Route 53's home (us-east-1) even when unused
            out = ["*", *dict.fromkeys([*regions, "us-east-1"])]
        return out
    return None


def fault_schema(regions: tuple[str, ...] = ()) -> list[dict]:
    """Every registered fault (faults/base.py's registry): kind, description, fields with type,
    default, whether it may be empty, and choices. JSON-serialisable; what the forms are built from."""
    out = []
    for kind in fault_kinds():
        cls = _REGISTRY[kind]
        fields = []
        for f in dataclasses.fields(cls):
            typ, optional = _field_type(f.type)  # a string: the fault modules use PEP 563
            has_default = f.default is not dataclasses.MISSING
            fields.append({"name": f.name, "type": typ, "optional": optional, "required": not has_default,
                           "default": f.default if has_default else None,
                           "choices": _choices(kind, f.name, regions)})
        doc = " ".join((cls.__doc__ or "").split())
        if not doc or doc.startswith(cls.__name__ + "("):
            # no docstring of its own (the dataclass signature): the faults package's helper says it
            from gameday import faults

            doc = " ".join((getattr(getattr(faults, kind, None), "__doc__", None) or "").split())
        if not doc:
            doc = " ".join((sys.modules[cls.__module__].__doc__ or "").split())
        out.append({"kind": kind, "doc": doc,
                    "capabilities": list(cls.capabilities), "fields": fields})
    return out


def coerce_params(kind: str, params: dict, regions: tuple[str, ...] = ()) -> dict:
    """Form values (strings from a form or curl, or JSON values) to the fault's field types:
    "" and null mean "not given" (the field's default); FaultError names a bad value."""
    if not isinstance(params, dict):
        raise FaultError(f"{kind}: params must be an object, got {type(params).__name__}")
    spec = next((s for s in fault_schema(regions) if s["kind"] == kind), None)
    if spec is None:
        raise FaultError(f"unknown fault kind {kind!r}: one of {', '.join(fault_kinds())}")
    by_name = {f["name"]: f for f in spec["fields"]}
    out: dict = {}
    for name, value in params.items():
        f = by_name.get(name)
        if f is None:
            out[name] = value  # fault_from_record names the unknown parameter
            continue
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        try:
            if f["type"] == "bool":
                out[name] = value if isinstance(value, bool) else parse_bool(value, name)
            elif f["type"] == "int" and isinstance(value, str):
                out[name] = int(value.strip())
            elif f["type"] == "float" and isinstance(value, str):
                out[name] = float(value.strip())
            elif f["type"] == "float" and isinstance(value, int) and not isinstance(value, bool):
                out[name] = float(value)
            else:
                out[name] = value.strip() if isinstance(value, str) else value
        except (ValueError, LoadInputError) as e:
            raise FaultError(f"{kind}: {name}: {e}") from None
    return out


# -- the panel: a nemesis, the environment's state, a timeline ------------------------------------------------

def timeline_entry(e: dict, address_region: dict[str, str]) -> dict | None:
    """An environment event as one timeline mark ({t, kind, label, region?, ok?}), or None."""
    kind = e.get("kind")
    t = e.get("ts")
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
        fault = fault_from_record(kind, coerce_params(kind, params, self.regions))
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
    from flask import Blueprint, Response, jsonify, redirect, request, send_from_directory, session, url_for
    from locust import events

    opts = environment.parsed_options
    token = token_from(opts)
    if hasattr(opts, "chaos_token"):
        opts.chaos_token = ""   # parsed options travel to workers and into reports: keep the secret out
    host = getattr(opts, "web_host", "127.0.0.1")
    loopback = is_loopback(host)
    journal_dir = Path(getattr(opts, "chaos_dir", "") or default_journal_dir(endpoints))
    panel = ChaosPanel(endpoints, journal_dir)
    rollback_on_stop = parse_bool(getattr(opts, "chaos_rollback_on_stop", "false") or "false",
                                  "--chaos-rollback-on-stop")
    app = web_ui.app
    # a token or --web-login given on loopback is enforced too: whoever set one wants it
    guard = _Guard(web_ui, token=token, required=not loopback or bool(token) or bool(getattr(opts, "web_login", False)))
    if guard.required and token:
        guard.install_login(app)

    prefix = (getattr(opts, "web_base_path", "") or "").rstrip("/") + "/chaos"   # Locust's --web-base-path
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
        body = request.get_json(silent=True)
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

    app.register_blueprint(bp)

    web_ui.template_args["extendedTabs"] = [*web_ui.template_args.get("extendedTabs", []), TAB]

    script = b'<script src="./chaos/static/chaos.js" defer></script>'

    @app.after_request
    def _add_panel_script(response: Response):
        # Locust's index page (the React UI): the panel's script mounts the tab's content
        if request.endpoint == "locust.index" and response.status_code == 200 and response.mimetype == "text/html":
            body = response.get_data()
            if script not in body:
                response.set_data(body.replace(b"</body>", script + b"\n</body>", 1))
        return response

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

    log.info("gameday chaos: Chaos tab on; faults journaled in %s%s", journal_dir / "journal.jsonl",
             f" (on {host or '*'}: login required)" if guard.required else "")
    return panel


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
