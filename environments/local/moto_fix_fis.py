"""FIS experiments in moto corrected to AWS: their state is what the local FIS runner (fis.py)
says, never moto's own progression.

moto 5.2.5 keeps experiments as records and moves them through ManagedState: with the default
("immediate") progression an experiment reads "completed" as soon as it is started, and every
action reads whatever the experiment does. In AWS an experiment starts "initiating", runs its
actions for their durations, and is "completed", "stopped" or "failed" only when that happened.

Here:
- a started experiment is "initiating" (what StartExperiment answers in AWS) and stays so until
  the harness claims it: the admin route `fis_experiment` sets its state, each action's state,
  start and end times, and the experiment's end time (body: region, id, status, reason,
  endTime?, actions: {name: {status, reason, startTime?, endTime?}});
- moto's advance()/ManagedState never moves a state (GetExperiment and ListExperiments read the
  harness's truth);
- StopExperiment of a running experiment: "stopping" (moto's own); the runner makes it "stopped"
  once the actions' effects are undone. An experiment no runner claimed (a moto server without the
  local environment's FIS runner) has nothing to undo: it is "stopped" at once.

Only moto and the standard library at import (moto_corrections).
"""

from __future__ import annotations

import time

from moto.fis import models as fis_models
from moto.fis.models import Experiment, FISBackend

from gameday.environments.local.moto_corrections import find_in_backends

EXPERIMENT_STATUSES = ("pending", "initiating", "running", "completed", "stopping", "stopped", "failed", "cancelled")
ACTION_STATUSES = ("pending", "initiating", "running", "completed", "cancelled", "stopping", "stopped", "failed",
                   "skipped")
TERMINAL = ("completed", "stopped", "failed", "cancelled")
INITIATING_REASON = "Experiment is initiating."
STOPPING_REASON = "Experiment is stopping."


def _status(self: Experiment) -> str:
    return self._status


def _set_status(self: Experiment, value: str) -> None:
    self._status = value


def _patch_experiment() -> None:
    if getattr(Experiment, "gameday_patched", False):   # once per process (a zygote's servers inherit it)
        return
    Experiment.gameday_patched = True
    original_init = Experiment.__init__

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self._status = "initiating"
        self.gameday_claimed = False
        self.gameday_reason = INITIATING_REASON

    original_sync = Experiment._sync_state

    def _sync_state(self) -> str:
        if self.gameday_claimed:
            return self._status      # the runner set the experiment's and each action's state
        if self._status == "stopping":   # nothing runs it: nothing to undo
            self._status = "stopped"
        return original_sync(self)

    def with_reason(original):
        def to_dict(self, *args, **kwargs):
            out = original(self, *args, **kwargs)
            if self.gameday_claimed or self._status == "initiating":
                out["state"] = {"status": self._status, "reason": self.gameday_reason}
            return out
        return to_dict

    original_stop = FISBackend.stop_experiment

    def stop_experiment(self, id: str) -> dict:
        experiment = self.experiments.get(id)
        if experiment is not None and experiment._status not in TERMINAL:
            experiment.gameday_reason = STOPPING_REASON   # moto makes it "stopping"; the runner, "stopped"
        return original_stop(self, id)

    FISBackend.stop_experiment = stop_experiment
    Experiment.__init__ = __init__
    Experiment._sync_state = _sync_state
    Experiment.status = property(_status, _set_status)   # no ManagedState progression
    Experiment.to_dict = with_reason(Experiment.to_dict)
    Experiment.to_summary_dict = with_reason(Experiment.to_summary_dict)


def _find(region: str, experiment_id: str) -> Experiment:
    return find_in_backends(fis_models.fis_backends, region, lambda b: b.experiments.get(experiment_id),
                            f"FIS experiment {experiment_id!r}")


def _checked(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"{what} status {value!r}: one of {', '.join(allowed)}")
    return value


def set_experiment_state(body: dict) -> dict:
    """The runner's truth about one experiment (admin route fis_experiment)."""
    exp = _find(body["region"], body["id"])
    status = _checked(body["status"], EXPERIMENT_STATUSES, "experiment")
    updates = {}
    for name, state in (body.get("actions") or {}).items():
        if name not in exp.actions:
            raise KeyError(f"experiment {exp.id} has no action {name!r}")
        updates[name] = state
        _checked(state["status"], ACTION_STATUSES, f"action {name!r}")
    exp.gameday_claimed = True
    exp._status = status
    exp.gameday_reason = body.get("reason") or status
    exp.end_time = body.get("endTime")
    for name, state in updates.items():
        action = exp.actions[name]
        action["state"] = {"status": state["status"], "reason": state.get("reason") or state["status"]}
        for key in ("startTime", "endTime"):
            if state.get(key) is not None:
                action[key] = state[key]
            else:
                action.pop(key, None)
    return {"id": exp.id, "status": exp._status, "claimed_at": time.time()}


def install(admin) -> None:
    _patch_experiment()
    admin.route("fis_experiment", set_experiment_state)
