"""What every fault is: data (kind, target, params) plus inject / rollback against an Environment.

A fault is a frozen dataclass whose fields are its parameters, so that it can be written to
the run's journal as {kind, params} and rebuilt from it (`fault_from_record`) by
`gameday rollback` after the process that injected it was SIGKILLed. Parameters are
validated when the fault is constructed (FaultError, one line naming what is allowed), and
against the environment (its regions, its capabilities) before anything is journaled.

`inject(env) -> dict` says what was done (the task ARNs stopped, the API-fault rule id);
`rollback(env, injected=None) -> dict` undoes it and is idempotent: rolling back a fault that
is not (or no longer) in effect succeeds and changes nothing. `injected` is what inject
returned, when it is known; every rollback also works without it (after a SIGKILL between
applying a fault and journaling the result, only the intent is on disk).
"""

from __future__ import annotations

import dataclasses
import re
from functools import lru_cache
from typing import Any, ClassVar

from gameday.environments.base import CapabilityMissing, Environment
from gameday.config import REGION_RE

# Route 53 is a global service whose control plane lives in us-east-1 (docs/architecture.md): the
# local environment always runs us-east-1's endpoint, whatever regions the service uses.
ROUTE53_HOME = "us-east-1"

_REGISTRY: dict[str, type["Fault"]] = {}


class FaultError(ValueError):
    """A fault that cannot be built or cannot apply to this environment; str() is one line."""


@lru_cache(maxsize=1)
def known_aws_regions() -> tuple[str, ...]:
    """Regions of the standard AWS partitions, from botocore's own endpoint data (no network)."""
    import boto3

    s = boto3.session.Session()
    out: set[str] = set()
    for partition in ("aws", "aws-us-gov"):
        try:
            out.update(s.get_available_regions("ec2", partition_name=partition))
        except Exception:  # noqa: BLE001 - botocore data layout changes: fall back to the format check
            pass
    return tuple(sorted(out))


def check_region(value: Any, field: str, *, wildcard: bool = False) -> str:
    """A region name AWS knows (format and botocore's region list). Membership in the
    environment is checked later, by Fault.check(env), when the environment is known."""
    if wildcard and value == "*":
        return value
    if not isinstance(value, str) or not REGION_RE.fullmatch(value):
        raise FaultError(f"{field}: {value!r} is not an AWS region name like us-east-1")
    known = known_aws_regions()
    if known and value not in known:
        raise FaultError(f"{field}: unknown region {value!r}: one of {', '.join(known)}")
    return value


def check_fraction(value: Any, field: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FaultError(f"{field}: must be a number between 0 and 1, got {value!r}")
    lo_ok = value >= 0 if allow_zero else value > 0
    if not (lo_ok and value <= 1):
        bounds = "0 <= x <= 1" if allow_zero else "0 < x <= 1"
        raise FaultError(f"{field}: must be within {bounds}, got {value!r}")
    return float(value)


def check_choice(value: Any, field: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise FaultError(f"{field}: unknown {field} {value!r}: one of {', '.join(choices)}")
    return value


def check_positive(value: Any, field: str, *, allow_none: bool = True, integer: bool = False) -> Any:
    if value is None and allow_none:
        return None
    types = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, types) or value <= 0:
        what = "a whole number >= 1" if integer else "a number > 0"
        raise FaultError(f"{field}: must be {what}, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class Fault:
    """Base class. Subclasses set `kind` and `capabilities`, declare their parameters as
    dataclass fields, and implement target / describe / inject / rollback."""

    kind: ClassVar[str] = "?"
    capabilities: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.kind != "?":
            _REGISTRY[cls.kind] = cls

    # -- data ----------------------------------------------------------------------------------------
    @property
    def params(self) -> dict:
        """The constructor's keyword arguments: `type(f)(**f.params) == f`."""
        return dataclasses.asdict(self)

    @property
    def target(self) -> str:
        raise NotImplementedError

    @property
    def required_capabilities(self) -> tuple[str, ...]:
        return self.capabilities

    @property
    def required_capability(self) -> str:
        """The primary capability (some faults need more: see required_capabilities)."""
        return self.required_capabilities[0]

    def describe(self) -> str:
        raise NotImplementedError

    def regions_used(self) -> dict[str, str]:
        """{field: region} whose regions must belong to the environment."""
        return {}

    def control_plane_regions(self) -> dict[str, str]:
        """{field: region} that may also name Route 53's home region (an AWS API endpoint)."""
        return {}

    # -- against an environment --------------------------------------------------------------------
    def check(self, env: Environment) -> None:
        """CapabilityMissing if the environment cannot do this fault; FaultError if a region
        is not part of it. Called before anything is journaled."""
        for cap in self.required_capabilities:
            env.require(cap)
        regions = tuple(env.regions)
        for field, region in self.regions_used().items():
            if region not in regions:
                raise FaultError(f"{self.kind}: {field} {region!r} is not a region of this environment: "
                                 f"one of {', '.join(regions)}")
        api_regions = tuple(dict.fromkeys([*regions, ROUTE53_HOME]))
        for field, region in self.control_plane_regions().items():
            if region != "*" and region not in api_regions:
                raise FaultError(f"{self.kind}: {field} {region!r} has no AWS endpoint in this environment: "
                                 f"one of {', '.join(api_regions)}")
        env_check = getattr(env, "check_fault", None)  # environments with guardrails (aws): caps, stop conditions
        if env_check is not None:
            env_check(self)

    def inject(self, env: Environment) -> dict:
        raise NotImplementedError

    def rollback(self, env: Environment, injected: dict | None = None) -> dict:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.describe()


def fault_kinds() -> tuple[str, ...]:
    _load_all()
    return tuple(sorted(_REGISTRY))


def fault_from_record(kind: str, params: dict) -> Fault:
    """Rebuild a fault from its journaled kind and params (FaultError when that is impossible)."""
    _load_all()
    cls = _REGISTRY.get(kind)
    if cls is None:
        raise FaultError(f"unknown fault kind {kind!r}: one of {', '.join(sorted(_REGISTRY))}")
    if not isinstance(params, dict):
        raise FaultError(f"{kind}: params must be an object, got {type(params).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - names)
    if unknown:
        raise FaultError(f"{kind}: unknown parameter(s) {', '.join(unknown)}: expected {', '.join(sorted(names))}")
    try:
        return cls(**params)
    except TypeError as e:
        raise FaultError(f"{kind}: {e}") from None


def _load_all() -> None:
    # the registry fills as fault modules are imported; make sure every built-in one is
    from gameday.faults import api, ecs, lambda_fault, network, replication  # noqa: F401


def inject_fault(fault: Fault, env: Environment) -> dict:
    """Apply a fault: the environment's own driver when it has one (aws), else the fault's inject."""
    driver = getattr(env, "fault_driver", None)
    return driver(fault).inject() if driver is not None else fault.inject(env)


def rollback_fault(fault: Fault, env: Environment, injected: dict | None = None) -> dict:
    driver = getattr(env, "fault_driver", None)
    return driver(fault).rollback(injected) if driver is not None else fault.rollback(env, injected)


def require_control(env: Environment):
    """The local environment's control API (LocalEnvironment.control); CapabilityMissing otherwise."""
    fn = getattr(env, "control", None)
    if fn is None:
        raise CapabilityMissing(f"the {env.kind} environment has no control API for this fault")
    return fn


AZ_RE = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d[a-z]$")
