"""The Locust worker image `gameday-worker:<hash>`, built on this machine without any image registry.

The same recipe as the reference service's image (images.py): FROM the Debian base image made
with debootstrap, plus gameday as installed here and the host's own copies of what a worker
imports (locust and its dependencies, gameday's command line), byte-compiled at build time,
built with the classic builder and no network. Unlike the service image it carries compiled
modules (gevent, greenlet, pyzmq, ...): they load because the base image's python3 is the same
CPython minor version as the host's (Debian 12: 3.11), which the build checks by importing what
a worker imports, so a mismatch fails the build with one line rather than a worker that dies.

The container runs `gameday load --worker` against the master that GAMEDAY_MASTER_HOST and
GAMEDAY_MASTER_PORT (default 5557) name. deploy/Dockerfile.worker is the same image for a team's
own machine, built from a published wheel with pip; this one is what CI builds and runs.

The tag is a hash of everything that goes in (the base tag, the Dockerfile, the check script,
the dependencies' versions, the bytes of gameday's files), so a second build finds the image.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import time
import tomllib
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlsplit

from gameday.environments.docker.images import (RECIPE_VERSION, ImageBuildError, _closure, _hash, _image_exists,
                                                _remove_older, build_offline, copy_distribution,
                                                ensure_base_image)

WORKER_REPO = "gameday-worker"
# what `gameday load --worker` imports beyond the standard library and gameday itself
WORKER_DEPENDENCIES = ("locust", "typer", "pydantic", "boto3", "dnspython", "requests", "tenacity")
MASTER_HOST_ENV = "GAMEDAY_MASTER_HOST"
MASTER_PORT_ENV = "GAMEDAY_MASTER_PORT"
DEFAULT_MASTER_PORT = 5557        # Locust's own default master port
# sh's ${VAR:?message}: a worker told no master stops at once, saying which variable to set
WORKER_CMD = (f'exec gameday load --worker '
              f'--master-host "${{{MASTER_HOST_ENV}:?set {MASTER_HOST_ENV} to the address of the Locust master}}" '
              f'--master-port "${{{MASTER_PORT_ENV}:-{DEFAULT_MASTER_PORT}}}"')
SITE = "/opt/gameday/site-packages"

# run at build time with the image's python: the host's compiled modules must load there
CHECK_SCRIPT = f"""\
import sys
host = {sys.implementation.cache_tag!r}
if sys.implementation.cache_tag != host:
    sys.exit(f"gameday-worker: the base image runs {{sys.implementation.cache_tag}}, this host {{host}}: "
             f"the host's compiled modules (gevent, greenlet, pyzmq) cannot load there")
import gameday.cli, gameday.loadgen.locustfile  # noqa: E401,F401 - what a worker imports
"""

DOCKERFILE = f"""\
FROM {{base}}
COPY site-packages {SITE}
COPY check_worker.py /opt/gameday/check_worker.py
ENV PYTHONPATH={SITE} PYTHONUNBUFFERED=1 {MASTER_PORT_ENV}={DEFAULT_MASTER_PORT}
RUN printf '#!/bin/sh\\nexec python3 -m gameday.cli "$@"\\n' > /usr/local/bin/gameday \\
 && chmod 755 /usr/local/bin/gameday \\
 && python3 -m compileall -q {SITE} \\
 && python3 /opt/gameday/check_worker.py
WORKDIR /tmp
CMD ["/bin/sh", "-c", {json.dumps(WORKER_CMD)}]
"""


# -- gameday itself ------------------------------------------------------------------------------
def _installed_gameday() -> metadata.Distribution:
    """gameday's installed distribution: its .dist-info (the checkout's own gameday.egg-info, which a
    python started in the checkout finds first, is setuptools' build residue, not an install)."""
    for dist in metadata.distributions(name="gameday"):
        if dist.read_text("METADATA") is not None:
            return dist
    raise ImageBuildError("gameday is not installed (no gameday .dist-info): `pip install gameday` "
                          "(or `pip install -e .` in a checkout)")


def _editable_source(dist: metadata.Distribution) -> Path | None:
    """The checkout an editable install of gameday points at; None when it is installed from a wheel."""
    info = json.loads(dist.read_text("direct_url.json") or "{}")
    if not info.get("dir_info", {}).get("editable"):
        return None
    return Path(unquote(urlsplit(info["url"]).path))


def _listed(root: Path, folder: str) -> list[Path]:
    """The files of `folder` a checkout ships: git's view (tracked or new, not ignored) when it is one."""
    if (root / ".git").exists():
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-co", "--exclude-standard", "--", folder],
                             capture_output=True, text=True, check=True).stdout.splitlines()
        files = [root / f for f in out]
    else:
        files = list((root / folder).rglob("*"))
    return sorted(p for p in files if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


def gameday_files() -> dict[str, bytes]:
    """Every file of the gameday package as a worker imports it: {path inside site-packages: bytes},
    read once, so that the tag and the image are made of the same bytes while the checkout changes.

    An editable install maps the checkout's top-level folders onto gameday.* (pyproject's
    [tool.setuptools.package-dir]): each folder goes where the wheel would put it, package data
    included. An installed gameday: the files its distribution lists."""
    dist = _installed_gameday()
    root = _editable_source(dist)
    if root is None:
        return {str(f): Path(dist.locate_file(f)).read_bytes() for f in dist.files or []
                if f.parts[0] != ".." and "__pycache__" not in f.parts}
    mapping = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    files = {}
    for package, folder in mapping.items():
        target = package.replace(".", "/")
        files.update({f"{target}/{p.relative_to(root / folder)}": p.read_bytes() for p in _listed(root, folder)})
    # importlib.metadata then finds gameday's version and entry points in the image
    files.update({str(f): Path(dist.locate_file(f)).read_bytes() for f in dist.files or []
                  if f.parent.name.endswith(".dist-info") and f.name in ("METADATA", "entry_points.txt")})
    return files


# -- the image -----------------------------------------------------------------------------------
def worker_tag(base: str, files: dict[str, bytes]) -> str:
    """gameday-worker:<hash of the base tag, the recipe, the dependencies' versions, gameday's files>."""
    deps = [f"{d.metadata['Name']}=={d.version}" for d in _closure(WORKER_DEPENDENCIES)]
    digests = [f"{dest}:{hashlib.sha256(data).hexdigest()}" for dest, data in sorted(files.items())]
    return f"{WORKER_REPO}:{_hash(RECIPE_VERSION, base, DOCKERFILE, CHECK_SCRIPT, *deps, *digests)}"


def _write_context(ctx: Path, base: str, files: dict[str, bytes]) -> None:
    (ctx / "Dockerfile").write_text(DOCKERFILE.replace("{base}", base, 1))   # the command has braces of its own
    (ctx / "check_worker.py").write_text(CHECK_SCRIPT)
    site = ctx / "site-packages"
    for dist in _closure(WORKER_DEPENDENCIES):
        # compiled modules too: the build's check imports them with the image's python
        copy_distribution(dist, site, compiled_ok=True)
    for dest, data in files.items():
        target = site / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def ensure_worker_image(client, progress=lambda m: None, files: dict[str, bytes] | None = None) -> str:
    """The worker image's tag, built (the base image first) if this daemon lacks it; of gameday as
    installed now, or of `files` (what gameday_files() read earlier)."""
    files = gameday_files() if files is None else files
    base = ensure_base_image(client, progress)
    tag = worker_tag(base, files)
    if _image_exists(client, tag):
        return tag
    t0 = time.monotonic()
    progress(f"building worker image {tag} from gameday and the host's locust")
    with tempfile.TemporaryDirectory(prefix="gameday-worker-build-") as tmp:
        _write_context(Path(tmp), base, files)
        build_offline(client, tmp, tag)
    progress(f"worker image {tag} built in {time.monotonic() - t0:.1f}s")
    _remove_older(client, WORKER_REPO, keep=tag)
    return tag


def worker_environment(master_host: str, master_port: int) -> dict[str, str]:
    """The container's environment for a worker of the master at master_host:master_port."""
    return {MASTER_HOST_ENV: master_host, MASTER_PORT_ENV: str(master_port)}


if __name__ == "__main__":   # python -m gameday.environments.docker.worker_image: build it, print the tag
    from gameday.environments.docker.preflight import docker_client

    try:
        print(ensure_worker_image(docker_client(), progress=lambda m: print(m, file=sys.stderr)))
    except ImageBuildError as e:
        sys.exit(f"gameday-worker: {e}")
