// gameday's Chaos tab (served by loadgen/chaos_ui.py). Loaded into Locust's index page, it mounts
// the panel under Locust's tab bar while the "Chaos" tab (template_args.extendedTabs) is selected;
// on /chaos/ it fills the page. Plain DOM, no build step: Locust's React bundle is left as it is.
(function () {
  "use strict";
  var script = document.currentScript;
  var API = script.src.replace(/static\/chaos\.js.*$/, "");   // .../chaos/
  var POLL_MS = 1000;
  var WINDOW_S = 300;                                          // the timeline shows the last 5 minutes
  var LANES = { fault: 12, alarm: 30, dns: 48, lambda: 66, load: 84 };

  var css = [
    ".gdc{padding:12px 16px;font-size:14px;line-height:1.4}",
    ".gdc h3{font-size:16px;margin:18px 0 6px}",
    ".gdc table{border-collapse:collapse;margin:4px 0}",
    ".gdc th,.gdc td{border-bottom:1px solid rgba(128,128,128,.35);padding:4px 10px;text-align:left;vertical-align:top}",
    ".gdc-badge{display:inline-block;border-radius:10px;padding:1px 8px;margin:1px 4px 1px 0;font-size:12px;color:#fff;background:#757575}",
    ".gdc-OK{background:#2e7d32}.gdc-ALARM{background:#c62828}.gdc-INSUFFICIENT_DATA{background:#9e9e9e}",
    ".gdc-error{color:#c62828;font-weight:bold}",
    ".gdc-msg{margin-left:8px}.gdc-msg.bad{color:#c62828}.gdc-msg.good{color:#2e7d32}",
    ".gdc-forms{display:flex;flex-wrap:wrap;gap:10px}",
    ".gdc-form{border:1px solid rgba(128,128,128,.5);border-radius:6px;padding:8px 10px;width:300px}",
    ".gdc-form h4{margin:0 0 4px;font-size:15px}.gdc-form p{font-size:12px;opacity:.8;margin:0 0 6px}",
    ".gdc-form label{display:flex;justify-content:space-between;align-items:center;margin:3px 0;font-size:13px}",
    ".gdc-form input[type=text],.gdc-form input[type=number],.gdc-form select{width:150px}",
    ".gdc button{cursor:pointer;padding:3px 10px;border-radius:4px;border:1px solid #888}",
    ".gdc button.inject{background:#c62828;color:#fff;border-color:#c62828;margin-top:4px}",
    ".gdc-timeline svg{width:100%;height:100px;border:1px solid rgba(128,128,128,.35)}",
    ".gdc-events{max-height:220px;overflow:auto;font-family:monospace;font-size:12px}",
    ".gdc-dns-answer{font-weight:bold;font-size:16px}"
  ].join("\n");

  function esc(s) {
    return String(s === undefined || s === null ? "" : s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function hms(t) { return new Date(t * 1000).toISOString().substr(11, 8); }

  function api(method, path, body) {
    var init = { method: method, credentials: "same-origin", headers: {} };
    if (body !== undefined) { init.headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
    return fetch(API + path, init).then(function (r) {
      return r.json().catch(function () { return { error: "HTTP " + r.status }; })
        .then(function (data) { return { status: r.status, data: data }; });
    });
  }

  // -- the panel ----------------------------------------------------------------------------------
  var root = document.createElement("div");
  root.id = "gameday-chaos";
  root.className = "gdc";
  root.setAttribute("data-testid", "chaos-panel");
  root.innerHTML =
    "<style>" + css + "</style>" +
    "<div class='gdc-error' data-testid='chaos-error'></div>" +
    "<h3>Live state <small data-testid='chaos-load'></small></h3>" +
    "<div>DNS <span data-testid='chaos-dns-name'></span> &rarr; <span class='gdc-dns-answer' data-testid='chaos-dns-answer'>?</span></div>" +
    "<table data-testid='chaos-regions'><thead><tr><th>region</th><th>alarms</th><th>tasks running/desired</th>" +
    "<th>healthy targets</th><th>data plane</th><th>DNS</th></tr></thead><tbody></tbody></table>" +
    "<table data-testid='chaos-replication'><thead><tr><th>replication</th><th>lag</th><th>pending</th><th></th></tr></thead><tbody></tbody></table>" +
    "<h3>Faults <button data-testid='chaos-rollback-all' class='rollback-all'>Roll back all</button>" +
    "<span class='gdc-msg' data-testid='chaos-message'></span></h3>" +
    "<table data-testid='chaos-faults'><thead><tr><th>id</th><th>state</th><th>age</th><th>what</th><th></th></tr></thead><tbody></tbody></table>" +
    "<h3>Timeline <small>(up to the last 5 min: faults, alarms, DNS, Lambda, load)</small></h3>" +
    "<div class='gdc-timeline' data-testid='chaos-timeline'><svg viewBox='0 0 1000 96' preserveAspectRatio='none'></svg>" +
    "<div class='gdc-events' data-testid='chaos-events'></div></div>" +
    "<h3>Inject a fault</h3><div class='gdc-forms' data-testid='chaos-forms'>loading&hellip;</div>" +
    "<p style='font-size:12px;opacity:.7' data-testid='chaos-journal'></p>";

  function q(sel) { return root.querySelector(sel); }
  function message(text, good) {
    var m = q("[data-testid=chaos-message]");
    m.textContent = text;
    m.className = "gdc-msg " + (good ? "good" : "bad");
  }

  // -- fault forms (built once from /chaos/faults) ----------------------------------------------------
  var schema = [];
  function field(kind, f) {
    var id = "gdc-" + kind + "-" + f.name;
    var tip = (f.optional ? "optional" : f.required ? "required" : "default " + f.default) + " (" + f.type + ")";
    var input;
    if (f.type === "bool") {
      input = "<input type='checkbox' name='" + f.name + "' id='" + id + "'" + (f.default ? " checked" : "") + ">";
    } else if (f.choices) {
      // a destination differs from its source: preselect the second choice
      var preset = f.default !== null ? f.default : f.name === "destination" ? f.choices[1] : null;
      input = "<select name='" + f.name + "' id='" + id + "'>" + f.choices.map(function (c) {
        return "<option" + (c === preset ? " selected" : "") + ">" + esc(c) + "</option>";
      }).join("") + "</select>";
    } else {
      var t = f.type === "int" || f.type === "float" ? "number" : "text";
      var step = f.type === "float" ? " step='any'" : "";
      input = "<input type='" + t + "'" + step + " name='" + f.name + "' id='" + id + "' placeholder='" +
        esc(f.optional ? "optional" : f.required ? "required" : "") + "' value='" +
        esc(f.default === null ? "" : f.default) + "'>";
    }
    return "<label title='" + esc(tip) + "'>" + esc(f.name) + input + "</label>";
  }
  function buildForms(faults) {
    schema = faults;
    q("[data-testid=chaos-forms]").innerHTML = faults.map(function (s) {
      return "<form class='gdc-form' data-kind='" + s.kind + "' data-testid='chaos-form-" + s.kind + "'>" +
        "<h4>" + esc(s.kind) + "</h4><p>" + esc(s.doc) + "</p>" +
        s.fields.map(function (f) { return field(s.kind, f); }).join("") +
        "<button type='submit' class='inject' data-testid='chaos-inject-" + s.kind + "'>Inject " + esc(s.kind) +
        "</button></form>";
    }).join("");
  }
  function formParams(form) {
    var spec = schema.filter(function (s) { return s.kind === form.dataset.kind; })[0];
    var params = {};
    spec.fields.forEach(function (f) {
      var el = form.elements[f.name];
      if (f.type === "bool") { params[f.name] = el.checked; return; }
      var v = el.value.trim();
      if (v === "") return;                       // not given: the fault's default
      params[f.name] = f.type === "int" ? parseInt(v, 10) : f.type === "float" ? parseFloat(v) : v;
    });
    return params;
  }
  root.addEventListener("submit", function (ev) {
    var form = ev.target.closest("form.gdc-form");
    if (!form) return;
    ev.preventDefault();
    var kind = form.dataset.kind;
    message("injecting " + kind + "\u2026", true);
    api("POST", "inject", { kind: kind, params: formParams(form) }).then(function (r) {
      if (r.status === 201) message("injected " + r.data.id + ": " + r.data.description, true);
      else message(kind + ": " + (r.data.error || "HTTP " + r.status), false);
      refresh();
    });
  });
  root.addEventListener("click", function (ev) {
    var b = ev.target.closest("button");
    if (!b) return;
    if (b.dataset.rollback) {
      message("rolling back " + b.dataset.rollback + "\u2026", true);
      api("POST", "rollback/" + encodeURIComponent(b.dataset.rollback)).then(function (r) {
        message(r.status === 200 ? "rolled back " + r.data.id : (r.data.error || "HTTP " + r.status), r.status === 200);
        refresh();
      });
    } else if (b.classList.contains("rollback-all")) {
      api("POST", "rollback-all").then(function (r) {
        message(r.status === 200 ? "rolled back " + r.data.rolled_back.length + " fault(s)" : (r.data.error || "HTTP " + r.status),
          r.status === 200);
        refresh();
      });
    }
  });

  // -- live state ----------------------------------------------------------------------------------
  function render(st) {
    q("[data-testid=chaos-error]").textContent = st.error || "";
    var load = st.load || {};
    q("[data-testid=chaos-load]").textContent = "load: " + (load.state || "?") + ", " + (load.users || 0) +
      " users, " + (load.rps || 0) + " req/s";
    q("[data-testid=chaos-dns-name]").textContent = st.dns.name;
    var answer = q("[data-testid=chaos-dns-answer]");
    answer.textContent = st.dns.answer.length ? st.dns.answer.join(", ") + " (" + st.dns.regions.join(", ") + ")" : "no answer";
    answer.dataset.region = st.dns.regions.join(",");
    q("[data-testid=chaos-regions] tbody").innerHTML = st.regions.map(function (r) {
      return "<tr data-region='" + r.region + "'><td>" + esc(r.region) + "<br><small>" + esc(r.lb_address) + "</small></td><td>" +
        r.alarms.map(function (a) {
          return "<span class='gdc-badge gdc-" + esc(a.state) + "' data-testid='chaos-alarm-" + esc(r.region) + "-" + esc(a.key) +
            "' data-state='" + esc(a.state) + "' title='since " + esc(a.since) + "'>" + esc(a.key) + " " + esc(a.state) + "</span>";
        }).join("") + "</td><td data-testid='chaos-tasks-" + esc(r.region) + "'>" + esc(r.tasks.running) + "/" + esc(r.tasks.desired) +
        (r.unavailable_azs.length ? " <small>AZ down: " + esc(r.unavailable_azs.join(", ")) + "</small>" : "") +
        "</td><td>" + esc(r.healthy) + "</td><td data-testid='chaos-blocked-" + esc(r.region) + "'>" +
        (r.blocked ? "<b class='gdc-error'>BLOCKED (" + esc(r.blocked) + ")</b>" : "up") +
        (st.control_planes_blocked.indexOf(r.region) >= 0 ? "<br><b class='gdc-error'>API blocked</b>" : "") +
        "</td><td>" + (r.dns ? "&#10003; answered" : "") + "</td></tr>";
    }).join("");
    q("[data-testid=chaos-replication] tbody").innerHTML = st.replication.map(function (x) {
      return "<tr><td>" + esc(x.direction) + "</td><td>" + (x.lag_s === null ? "-" : x.lag_s.toFixed(2) + "s") +
        "</td><td>" + esc(x.pending) + "</td><td>" + (x.paused ? "<b class='gdc-error'>PAUSED</b>" : "") + "</td></tr>";
    }).join("");
    var faults = st.faults.slice().reverse();
    q("[data-testid=chaos-faults] tbody").innerHTML = faults.length ? faults.map(function (f) {
      return "<tr data-testid='chaos-fault-" + esc(f.id) + "' data-state='" + esc(f.state) + "'><td>" + esc(f.id) + "</td><td>" +
        esc(f.state) + "</td><td>" + (f.active && f.age_s !== null ? f.age_s.toFixed(0) + "s" : "") + "</td><td>" +
        esc(f.description) + (f.error ? "<br><span class='gdc-error'>" + esc(f.error) + "</span>" : "") + "</td><td>" +
        (f.active ? "<button data-rollback='" + esc(f.id) + "' data-testid='chaos-rollback-" + esc(f.id) + "'>Roll back</button>" : "") +
        "</td></tr>";
    }).join("") : "<tr><td colspan='5'>none injected from this tab</td></tr>";
    q("[data-testid=chaos-journal]").textContent = "journal: " + st.journal +
      " (rolled back when Locust quits; after a SIGKILL: gameday rollback " + st.journal.replace(/\/journal\.jsonl$/, "") + ")";
    renderTimeline(st);
  }

  var COLORS = { fault: "#c62828", alarm: "#ef6c00", dns: "#1565c0", lambda: "#6a1b9a", load: "#2e7d32" };
  function renderTimeline(st) {
    var now = st.time;
    // the window grows with the session, from one minute up to five, so that marks spread out
    var first = st.timeline.length ? st.timeline[0].t : now;
    st.faults.forEach(function (f) { if (f.injected_ts && f.injected_ts < first) first = f.injected_ts; });
    var span = Math.max(60, Math.min(WINDOW_S, (now - first) * 1.1));
    var t0 = now - span;
    function x(t) { return 40 + Math.max(0, Math.min(955, (t - t0) / span * 955)); }
    var parts = ["<text x='40' y='95' font-size='8' fill='#888'>-" + Math.round(span) + "s</text>",
                 "<text x='975' y='95' font-size='8' fill='#888'>now</text>"];
    Object.keys(LANES).forEach(function (k) {
      parts.push("<text x='2' y='" + (LANES[k] + 4) + "' font-size='9' fill='" + COLORS[k] + "'>" + k + "</text>");
    });
    st.faults.forEach(function (f) {   // a bar while the fault is in effect
      if (!f.injected_ts) return;
      var end = f.rolled_back_ts || now;
      if (end < t0) return;
      parts.push("<rect x='" + x(f.injected_ts) + "' y='" + (LANES.fault - 5) + "' width='" + Math.max(2, x(end) - x(f.injected_ts)) +
        "' height='10' fill='" + COLORS.fault + "' opacity='.35'><title>" + esc(f.id + ": " + f.description) + "</title></rect>");
    });
    st.timeline.forEach(function (e) {
      if (e.t < t0) return;
      var color = e.kind === "alarm" ? (e.state === "ALARM" ? "#c62828" : e.state === "OK" ? "#2e7d32" : "#9e9e9e") : COLORS[e.kind];
      parts.push("<circle cx='" + x(e.t) + "' cy='" + (LANES[e.kind] || 90) + "' r='4' fill='" + color + "'><title>" +
        esc(hms(e.t) + " " + e.label) + "</title></circle>");
    });
    q("[data-testid=chaos-timeline] svg").innerHTML = parts.join("");
    q("[data-testid=chaos-events]").innerHTML = st.timeline.slice(-60).reverse().map(function (e) {
      return "<div data-kind='" + esc(e.kind) + "'><span style='color:" + (COLORS[e.kind] || "#777") + "'>" + hms(e.t) + " " +
        esc(e.kind) + "</span> " + esc(e.label) + "</div>";
    }).join("");
  }

  var inflight = false;
  function refresh() {
    if (inflight) return;
    inflight = true;
    api("GET", "state").then(function (r) {
      if (r.status === 200) render(r.data);
      else q("[data-testid=chaos-error]").textContent = r.data.error || "HTTP " + r.status;
    }).catch(function (e) {
      q("[data-testid=chaos-error]").textContent = "Locust does not answer: " + e;
    }).then(function () { inflight = false; });
  }
  function loadForms() {
    api("GET", "faults").then(function (r) {
      if (r.status === 200) buildForms(r.data.faults);
      else q("[data-testid=chaos-forms]").textContent = r.data.error || "HTTP " + r.status;
    });
  }

  // -- where the panel goes ---------------------------------------------------------------------------
  function chaosTabSelected() {
    var tabs = document.querySelectorAll("[role=tab]");
    for (var i = 0; i < tabs.length; i++) {
      if (tabs[i].textContent.trim() === "Chaos") return tabs[i].getAttribute("aria-selected") === "true";
    }
    return false;
  }
  function tabBar() {
    var list = document.querySelector("[role=tablist]");
    if (!list) return null;
    // MUI's Tabs sit in a Box; the selected tab's content (none for an extended tab without a
    // table) is that Box's next sibling: the panel goes right after the Box
    var tabs = list.closest(".MuiTabs-root");
    return (tabs && tabs.parentElement) || list;
  }
  function place() {
    var standalone = document.getElementById("gameday-chaos-standalone");
    if (standalone) {
      if (root.parentElement !== standalone) standalone.appendChild(root);
      return true;
    }
    var show = chaosTabSelected();
    if (show) {
      var bar = tabBar();
      if (bar && bar.nextElementSibling !== root) bar.parentElement.insertBefore(root, bar.nextSibling);
    }
    root.style.display = show ? "" : "none";
    return show;
  }

  var timer = null;
  function tick() {
    if (place()) refresh();
  }
  function start() {
    loadForms();
    tick();
    timer = setInterval(tick, POLL_MS);
    // React re-renders the tab bar when tabs change: put the panel back at once, not at the next tick
    new MutationObserver(function () { place(); }).observe(document.body, { childList: true, subtree: true, attributes: true,
      attributeFilter: ["aria-selected"] });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
