"""The running local environment described as an AWS account: the gameday.toml that `--env aws`
needs to rehearse on it (`gameday up --aws-config PATH`), as a team writes one for its staging
account (docs/aws.md), with what a real account gives through DNS written out:

- `[aws] endpoint_url`: the router (one endpoint for every service and region; on a real account
  the key is absent and the SDK finds each service's endpoint); the account id is moto's;
- the stack's names: hosted zone, table, topic, the failover function and its alias, and the
  discovery tags that find cluster, service and load balancer (provision.STACK_TAGS);
- per region `lb_url` (where clients reach the load balancer: a real ALB's DNS name resolves to
  it) and `addresses` (what the service's A record holds for that region);
- `dns_server`: the local DNS server that answers for the zone (real clients' resolvers);
- guardrail caps that let every built-in scenario's faults and load through (the plan's
  catalogue, environments/aws/plan.py), and the stop-condition alarm of every region;
- the running config's [service], [alarms], [route53], [failover], [budgets]... and its time
  profile as the "aws" profile, so the scenarios judge the same thresholds on the same clock
  (the alarms in moto were created with that profile's period).

The file is valid only while that `gameday up` runs (its ports are chosen at start).

TOML is written by `to_toml` below: neither tomli-w nor tomlkit is a dependency of the project
(tomli-w 1.2.0 on PyPI would replace it), and the config is plain data (tables, strings, numbers,
booleans, arrays); every text is read back with tomllib and compared before it is written.
"""

from __future__ import annotations

import math
import os
import tomllib
from pathlib import Path

from gameday.aws import LOCAL_ACCOUNT_ID
from gameday.config import GamedayConfig

# the running config's sections the aws config keeps as they are (the same thresholds and timings)
KEPT_SECTIONS = ("service", "alarms", "sns", "failover", "route53", "dynamodb", "budgets")
HEADER = ("# gameday.toml for --env aws, written by `gameday up --aws-config`: the running local environment\n"
          "# as an AWS account. Valid while that `gameday up` runs (its ports are chosen at start).\n"
          "#   gameday plan -c {path}\n#   gameday run --env aws -c {path}\n\n")


class AwsConfigWriteError(Exception):
    """The aws config cannot be written where asked; str() is one line."""


def account_config(stack) -> dict:
    """The config (as TOML-ready data) that points `--env aws` at `stack` (a started LocalStack)."""
    from gameday.environments.local import provision

    cfg: GamedayConfig = stack.config
    ctx, prov = stack.ctx, stack.ctx.provisioned
    data = cfg.model_dump(mode="json", exclude_none=True, include={"regions", *KEPT_SECTIONS})
    data["profiles"] = {name: p.model_dump(mode="json", exclude_none=True) for name, p in cfg.profiles.items()}
    data["profiles"]["aws"] = ctx.profile.model_dump(mode="json", exclude_none=True)
    data["aws"] = {
        "allowed_account_ids": [LOCAL_ACCOUNT_ID],
        "endpoint_url": ctx.router_url,
        "dns_server": f"127.0.0.1:{ctx.dns_port}",
        "hosted_zone_id": prov.hosted_zone_id,
        "table": cfg.dynamodb.table,
        "topic_name": cfg.sns.topic_name,
        "lambda_name": cfg.aws.lambda_name,
        "lambda_alias": provision.LAMBDA_ALIAS,
        "discovery_tags": dict(provision.STACK_TAGS),
        # the stand-in account runs FIS experiments (environments/local/fis.py) with any role
        "fis_role_arn": f"arn:aws:iam::{LOCAL_ACCOUNT_ID}:role/gameday-fis",
        "regions": {r: {"lb_url": ctx.lb_url(r), "addresses": [ctx.lb_addresses[r]]} for r in cfg.regions},
        "guardrails": {"stop_condition_alarms": [f"{r}/{provision.STOP_CONDITION_ALARM}" for r in cfg.regions]},
    }
    data["aws"]["guardrails"].update(suite_caps(GamedayConfig.model_validate(data)))
    return data


def suite_caps(cfg: GamedayConfig) -> dict:
    """The smallest caps that let every built-in scenario through (environments/aws/plan.py's
    catalogue): the largest total load, every task of a region (all_tasks_stopped), all of it."""
    from gameday.environments.aws.plan import scenario_catalogue

    most_rps = max(sum(load.values()) for _, load in scenario_catalogue(cfg).values())
    return {"max_rps": float(math.ceil(most_rps)), "max_tasks_stopped_per_region": cfg.service.desired_tasks,
            "max_fraction_of_service": 1.0}


def write_aws_config(stack, path: str | Path, *, force: bool = False) -> Path:
    """Write account_config(stack) to `path`; refuses an existing file unless `force` (a user's
    config is never overwritten silently) and a directory that does not exist."""
    p = Path(path)
    check_target(p, force=force)
    text = HEADER.format(path=p) + to_toml(account_config(stack))
    try:
        with open(p, "w" if force else "x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        raise AwsConfigWriteError(f"{p} already exists: pass --force to overwrite it") from None
    except OSError as e:
        raise AwsConfigWriteError(f"cannot write {p}: {e.strerror or e}") from None
    return p


def check_target(p: Path, *, force: bool = False) -> None:
    """Before anything starts: the aws config can be written at `p`."""
    if p.is_dir():
        raise AwsConfigWriteError(f"{p} is a directory: give a file path for the aws config")
    if p.exists() and not force:
        raise AwsConfigWriteError(f"{p} already exists: pass --force to overwrite it")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise AwsConfigWriteError(f"{p}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise AwsConfigWriteError(f"{p}: directory {parent} is not writable")


# -- TOML -----------------------------------------------------------------------------------------------

def to_toml(data: dict) -> str:
    """`data` (tables of strings, numbers, booleans, arrays) as TOML text; ValueError for a value
    TOML cannot hold (None) or a text that does not read back as `data`."""
    lines: list[str] = []
    _table(data, (), lines)
    text = "\n".join(lines).lstrip("\n") + "\n"
    if tomllib.loads(text) != _plain(data):
        raise ValueError("the TOML written does not read back as the config (a bug in to_toml)")
    return text


def _table(data: dict, path: tuple[str, ...], lines: list[str]) -> None:
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    if path and (scalars or not tables):
        lines += ["", f"[{'.'.join(_key(k) for k in path)}]"]
    lines += [f"{_key(k)} = {_value(v)}" for k, v in scalars.items()]
    for k, v in tables.items():
        _table(v, (*path, k), lines)


def _key(k: str) -> str:
    bare = k and all(c.isascii() and (c.isalnum() or c in "-_") for c in k)
    return k if bare else _string(k)


def _string(s: str) -> str:
    import json

    return json.dumps(s)   # a JSON string is a TOML basic string (\uXXXX escapes, no raw control characters)


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return ("inf" if v > 0 else "-inf") if math.isinf(v) else "nan" if math.isnan(v) else repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise ValueError(f"TOML has no value for {v!r}")


def _plain(v):
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v
