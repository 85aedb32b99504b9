"""The aws environment: rehearse on a real deployed stack, with guardrails (docs/aws.md).

    env = AwsEnvironment(load_config("gameday.toml"), run_dir).start()   # STS check, discovery, preflight
"""

from gameday.environments.aws.discovery import Problem, RegionTargets
from gameday.environments.aws.environment import (AwsConfigError, AwsEnvironment, PreflightFailed, RunAborted,
                                          attach_for_rollback)
from gameday.environments.aws.guardrails import AccountRefused, GuardrailViolation, StopConditionWatcher

__all__ = ["AccountRefused", "AwsConfigError", "AwsEnvironment", "GuardrailViolation", "PreflightFailed", "Problem",
           "RegionTargets", "RunAborted", "StopConditionWatcher", "attach_for_rollback"]
