"""A broken failover Lambda: every attempt fails with an injected error, runs past its
timeout, or starts late (a slow cold start / throttled invocation)."""

from __future__ import annotations

import dataclasses

from gameday.environments.base import Environment
from gameday.faults.base import Fault, FaultError, check_choice, check_positive, require_control

LAMBDA_MODES = ("error", "timeout", "delay")


@dataclasses.dataclass(frozen=True)
class LambdaFault(Fault):
    kind = "lambda_fault"
    capabilities = ("lambda_fault",)

    mode: str = "error"
    delay_s: float | None = None

    def __post_init__(self) -> None:
        check_choice(self.mode, "mode", LAMBDA_MODES)
        if self.mode == "delay":
            check_positive(self.delay_s, "delay_s", allow_none=False)
        elif self.delay_s is not None:
            raise FaultError(f"delay_s: only for mode='delay' (this fault is {self.mode!r})")

    @property
    def target(self) -> str:
        return "failover-lambda"

    def describe(self) -> str:
        what = {"error": "fails with an injected error",
                "timeout": "runs past its timeout and is stopped",
                "delay": f"starts {self.delay_s or 0:g}s late"}[self.mode]
        return f"break the failover Lambda: every invocation attempt {what} (asynchronous retries still apply)"

    def inject(self, env: Environment) -> dict:
        body = {"mode": self.mode} | ({"delay_s": self.delay_s} if self.delay_s is not None else {})
        return require_control(env)("POST", "/lambda/fault", body)

    def rollback(self, env: Environment, injected: dict | None = None) -> dict:
        return require_control(env)("DELETE", "/lambda/fault")
