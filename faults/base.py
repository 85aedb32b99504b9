"""What every fault is: data. A fault kind is a frozen pydantic model whose `kind` (a Literal)
names it and whose other fields are its parameters, with their constraints; cross-field rules
are model validators. The environment applies it (Environment.apply / revert, through its own
driver table): a fault never touches an environment itself.

One fault is written to the run's journal as {kind, params} and rebuilt from it by
`parse_fault({"kind": kind, **params})` (or `Fault.from_record(kind, params)`), through a
discriminated union of every fault kind: `gameday rollback` does that after the process that
injected it was SIGKILLed. Bad parameters raise FaultError with one line naming the field and
what is allowed. Whether the fault fits the environment (its capabilities, its regions) is
checked by `Environment.check_fault` before anything is journaled.

Every subclass that sets a Literal `kind` is a fault kind (registered when the class is
created; the faults package imports the built-in ones, so importing anything from
gameday.faults makes them all known).
"""

from __future__ import annotations

import types
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Mapping, Self, Union, get_args, get_origin

import annotated_types as at
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from gameday.aws import ROUTE53_HOME
from gameday.config import REGION_RE

if TYPE_CHECKING:
    from gameday.config import GamedayConfig
    from gameday.environments.base import Environment

_KINDS: dict[str, type["Fault"]] = {}


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


class RegionField:
    """Marks a field as an AWS region (the Chaos tab offers the environment's regions);
    wildcard: "*" (every region) is allowed too."""

    def __init__(self, wildcard: bool = False):
        self.wildcard = wildcard


def aws_region(value: str) -> str:
    """A region name AWS knows (format and botocore's region list). Membership in the
    environment is checked later, by Environment.check_fault, when the environment is known."""
    if not REGION_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not an AWS region name like us-east-1")
    known = known_aws_regions()
    if known and value not in known:
        raise ValueError(f"unknown region {value!r}: one of {', '.join(known)}")
    return value


Region = Annotated[str, AfterValidator(aws_region), RegionField()]
RegionOrAll = Annotated[str, AfterValidator(lambda v: v if v == "*" else aws_region(v)), RegionField(wildcard=True)]
Share = Annotated[float, Field(gt=0, le=1)]             # a share of tasks / calls / writes
Seconds = Annotated[float, Field(gt=0)]
Count = Annotated[int, Field(ge=1)]
Name = Annotated[str, Field(min_length=1)]             # a cluster, an API operation


class Fault(BaseModel):
    """Base class. Subclasses set `kind: Literal["..."] = "..."` and `capabilities`, declare their
    parameters as fields, and implement target / describe."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    kind: str
    capabilities: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def create(cls, **params: Any) -> Self:
        """This kind of fault with these parameters; FaultError (one line) if they are not valid.
        (Calling the class itself raises pydantic's ValidationError, several lines.)"""
        try:
            return cls.model_validate(params)
        except ValidationError as e:
            raise FaultError(error_line(e, cls)) from None

    @classmethod
    def __pydantic_init_subclass__(cls, **kw: Any) -> None:
        super().__pydantic_init_subclass__(**kw)
        kind = cls.model_fields["kind"].default
        if isinstance(kind, str):
            _KINDS[kind] = cls

    @classmethod
    def from_record(cls, kind: str, params: Any) -> "Fault":
        """The fault a journal line describes ({kind, params}); FaultError (one line) if it cannot be."""
        if not isinstance(params, Mapping):
            raise FaultError(f"{kind}: params must be an object, got {type(params).__name__}")
        return parse_fault({**params, "kind": kind})

    # -- data ----------------------------------------------------------------------------------------
    @property
    def params(self) -> dict:
        """The parameters (JSON values): `parse_fault({"kind": f.kind, **f.params}) == f`."""
        return self.model_dump(mode="json", exclude={"kind"})

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

    def check_regions(self, regions: tuple[str, ...], config: "GamedayConfig | None" = None) -> None:
        """FaultError if a region (or zone) of this fault is not part of an environment with these
        regions and this config."""
        for field, region in self.regions_used().items():
            if region not in regions:
                raise FaultError(f"{self.kind}: {field} {region!r} is not a region of this environment: "
                                 f"one of {', '.join(regions)}")
        api_regions = tuple(dict.fromkeys([*regions, ROUTE53_HOME]))
        for field, region in self.control_plane_regions().items():
            if region != "*" and region not in api_regions:
                raise FaultError(f"{self.kind}: {field} {region!r} has no AWS endpoint in this environment: "
                                 f"one of {', '.join(api_regions)}")

    def given_only_for(self, field: str, switch: str, value: str, *, required: bool = True) -> None:
        """Cross-field rule: `field` is given only when `switch` is `value` (and, if required, then it
        must be): an API fault's latency_s for effect='latency', a Lambda fault's delay_s for mode='delay'."""
        given, on = getattr(self, field) is not None, getattr(self, switch) == value
        if on and required and not given:
            raise ValueError(f"{field}: {switch}={value!r} needs {field}, {field_allowed(type(self), field, False)}")
        if given and not on:
            raise ValueError(f"{field}: only for {switch}={value!r} (this fault is {getattr(self, switch)!r})")

    def check(self, env: "Environment") -> None:
        """CapabilityMissing if the environment cannot do this fault; FaultError if it does not fit
        it (regions, guardrails). Called before anything is journaled."""
        env.check_fault(self)

    def __str__(self) -> str:
        return self.describe()


# -- the union of every kind: parsing and its one-line errors ----------------------------------------------

def fault_kinds() -> tuple[str, ...]:
    return tuple(sorted(_KINDS))


def fault_classes() -> dict[str, type[Fault]]:
    return dict(sorted(_KINDS.items()))


@lru_cache(maxsize=8)
def _adapter(classes: tuple[type[Fault], ...]) -> TypeAdapter:
    return TypeAdapter(Annotated[Union[classes], Field(discriminator="kind")])  # noqa: UP007 - a runtime tuple


def parse_fault(record: Any, *, strict: bool = True) -> Fault:
    """The fault {"kind": ..., **params} describes. strict=False also takes text values ("2",
    "0.5", "false": form fields). FaultError (one line) names the bad field and what is allowed."""
    if not isinstance(record, Mapping):
        raise FaultError(f"a fault is an object {{kind, ...params}}, got {type(record).__name__}")
    try:
        return _adapter(tuple(_KINDS.values())).validate_python(dict(record), strict=strict)
    except ValidationError as e:
        raise FaultError(error_line(e)) from None


def error_line(e: ValidationError, model: type[Fault] | None = None) -> str:
    """A pydantic error as one line: "<kind>: <field>: <what is allowed>, got <value>"."""
    lines: list[str] = []
    for err in e.errors(include_url=False):
        loc = list(err["loc"])
        cls = model or (_KINDS.get(loc.pop(0)) if loc else None)
        line = _one_error(err, cls, str(loc[0]) if loc else None)
        if line not in lines:
            lines.append(line)
    return "; ".join(lines)


def _one_error(err: dict, cls: type[Fault] | None, field: str | None) -> str:
    typ, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    kind = cls.model_fields["kind"].default if cls else "fault"
    if typ == "union_tag_invalid":
        return f"unknown fault kind {ctx.get('tag')!r}: one of {', '.join(fault_kinds())}"
    if typ == "union_tag_not_found":
        return f"a fault needs a kind: one of {', '.join(fault_kinds())}"
    if typ == "value_error":   # our own validators: their message says it all
        text = str(ctx.get("error", err["msg"]))
        return f"{kind}: {field}: {text}" if field else f"{kind}: {text}"
    if cls is None or field is None:
        return f"{kind}: {err['msg']}"
    if typ == "extra_forbidden":
        names = [n for n in cls.model_fields if n != "kind"]
        return f"{kind}: unknown parameter {field!r}: expected {', '.join(names)}"
    if typ == "literal_error":
        return f"{kind}: {field}: unknown {field} {value!r}: one of {', '.join(map(str, field_choices(cls, field)))}"
    allowed = field_allowed(cls, field)
    if typ == "missing":
        return f"{kind}: {field}: required ({allowed})"
    return f"{kind}: {field}: must be {allowed}, got {value!r}"


# -- what a field allows, read from its declaration (the errors above and the Chaos tab's forms) -------------

def field_parts(cls: type[Fault], name: str) -> tuple[Any, list[Any], bool]:
    """(base type, metadata, optional) of a field: Optional and Annotated unwrapped."""
    info = cls.model_fields[name]
    ann, meta = info.annotation, list(info.metadata)
    optional = False
    if get_origin(ann) in (Union, types.UnionType):
        args = [a for a in get_args(ann) if a is not type(None)]
        optional = len(args) < len(get_args(ann))
        ann = args[0]
    if get_origin(ann) is Annotated:
        ann, *extra = get_args(ann)
        for m in extra:
            meta += list(getattr(m, "metadata", [m]))
    return ann, meta, optional


def field_choices(cls: type[Fault], name: str) -> tuple:
    ann = field_parts(cls, name)[0]
    return get_args(ann) if get_origin(ann) is Literal else ()


_BOUNDS = ((at.Gt, "gt", ">"), (at.Ge, "ge", ">="), (at.Lt, "lt", "<"), (at.Le, "le", "<="))


def field_allowed(cls: type[Fault], name: str, say_optional: bool = True) -> str:
    """What a field accepts, in words: "a whole number >= 1", "a number within 0 < x <= 1"."""
    ann, meta, optional = field_parts(cls, name)
    region = next((m for m in meta if isinstance(m, RegionField)), None)
    if get_origin(ann) is Literal:
        what = "one of " + ", ".join(map(str, get_args(ann)))
    elif region is not None:
        what = "an AWS region like us-east-1" + (' or "*" (every region)' if region.wildcard else "")
    else:
        what = {bool: "true or false", int: "a whole number", float: "a number"}.get(ann, "a string")
        if any(isinstance(m, at.MinLen) for m in meta):
            what = "a non-empty string"
        bounds = [(op, getattr(m, attr)) for m in meta for typ, attr, op in _BOUNDS if isinstance(m, typ)]
        low = [(op, v) for op, v in bounds if op.startswith(">")]
        high = [(op, v) for op, v in bounds if op.startswith("<")]
        if low and high:   # x > 0 and x <= 1: "within 0 < x <= 1"
            what += f" within {low[0][1]} {low[0][0].replace('>', '<')} x {high[0][0]} {high[0][1]}"
        elif bounds:
            what += f" {bounds[0][0]} {bounds[0][1]}"
    return what + (" (or nothing)" if optional and say_optional else "")
