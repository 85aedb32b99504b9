"""A broken failover Lambda: every attempt fails with an injected error, runs past its
timeout, or starts late (a slow cold start / throttled invocation)."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import model_validator

from gameday.faults.base import Fault, Seconds

LambdaMode = Literal["error", "timeout", "delay"]
LAMBDA_MODES: tuple[str, ...] = get_args(LambdaMode)


class LambdaFault(Fault):
    """The failover Lambda fails every invocation attempt (error), runs past its timeout
    (timeout), or starts delay_s late (delay); asynchronous retries still apply."""

    kind: Literal["lambda_fault"] = "lambda_fault"
    capabilities = ("lambda_fault",)

    mode: LambdaMode = "error"
    delay_s: Seconds | None = None

    @model_validator(mode="after")
    def _delay_only_for_delay(self) -> "LambdaFault":
        self.given_only_for("delay_s", "mode", "delay")
        return self

    @property
    def target(self) -> str:
        return "failover-lambda"

    def describe(self) -> str:
        what = {"error": "fails with an injected error",
                "timeout": "runs past its timeout and is stopped",
                "delay": f"starts {self.delay_s or 0:g}s late"}[self.mode]
        return f"break the failover Lambda: every invocation attempt {what} (asynchronous retries still apply)"
