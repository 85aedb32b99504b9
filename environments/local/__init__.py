"""The embedded local environment: the whole seed architecture on loopback, no AWS account,
no Docker. `LocalEnvironment` (environments/local/environment.py) runs `gameday up --json` as a
child process and drives it through its control API.

This package's modules run in processes of their own (every moto server is
`python -m gameday.environments.local.moto_main`), and Python imports a package before any of
its modules: so importing the package imports nothing, and `LocalEnvironment` (which pulls in
pydantic, the config and the fault drivers, about 0.3 s of CPU) loads on first use."""

from __future__ import annotations

_LAZY = ("LocalEnvironment", "EnvironmentStartError", "START_TIMEOUT_S")


def __getattr__(name: str):
    if name in _LAZY:
        from gameday.environments.local import environment

        return getattr(environment, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
