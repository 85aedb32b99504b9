"""The docker environment's images, built on this machine without any image registry.

- The base image `gameday-base:<hash>`: a Debian root filesystem made with debootstrap
  (variant minbase, plus python3) from the Debian mirror apt is already configured with,
  imported with `docker import`. Debian's own python3-boto3 is not used: bookworm's is
  1.26 and its tenacity lacks what the reference service uses.
- The reference service image `gameday-service:<hash>`: the base, plus sut/ and the host's
  own pure-Python copies of the service's dependencies (boto3, botocore, tenacity and what
  they require: the versions the harness itself runs), byte-compiled at build time so a
  task does not compile botocore at every start. Built with the classic builder from a
  context the harness writes, with no network.

Each tag is a hash of everything that goes into the image (the debootstrap recipe; the base
tag, the Dockerfile, sut/'s files and the dependencies' versions), so a second run finds
the image and builds nothing, and any change builds a new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

import gameday.sut

log = logging.getLogger("gameday.docker.images")

# the reference service ships in the package (gameday.sut); the image lays it out as /opt/gameday/sut
SUT_DIR = Path(gameday.sut.__file__).resolve().parent
BASE_REPO = "gameday-base"
SERVICE_REPO = "gameday-service"
RECIPE_VERSION = "1"           # bump to rebuild every image after a change this file's hashes cannot see
BASE_PACKAGES = ("python3",)
SERVICE_DEPENDENCIES = ("boto3", "tenacity")   # sut/service.py's imports beyond the standard library
LABELS = {"gameday.image": "true"}

# The reference image meets the same contract as a user's image: everything from the environment.
SERVICE_CMD = ('exec python3 -m sut.service --host "$GAMEDAY_HOST" --port "$GAMEDAY_PORT" --region "$AWS_REGION" '
               '--table "$GAMEDAY_TABLE" --endpoint "$AWS_ENDPOINT_URL" --task-id "$GAMEDAY_TASK_ID" --az "$GAMEDAY_AZ"')
DOCKERFILE = f"""\
FROM {{base}}
COPY site-packages /opt/gameday/site-packages
COPY sut /opt/gameday/sut
RUN python3 -m compileall -q /opt/gameday
ENV PYTHONPATH=/opt/gameday:/opt/gameday/site-packages PYTHONUNBUFFERED=1
WORKDIR /opt/gameday
CMD ["/bin/sh", "-c", {json.dumps(SERVICE_CMD)}]
"""


class ImageBuildError(Exception):
    """An image could not be built; the message says why and what to do."""


def _hash(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _image_exists(client, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


# -- base ---------------------------------------------------------------------------------------------
def os_codename() -> str:
    text = Path("/etc/os-release").read_text()
    m = re.search(r"^VERSION_CODENAME=\"?([a-z]+)", text, re.M)
    if not m:
        raise ImageBuildError("cannot tell this machine's Debian release from /etc/os-release (VERSION_CODENAME)")
    return m.group(1)


def debian_mirror(suite: str) -> str:
    """The mirror apt is configured with for `suite` (deb822 .sources or one-line sources.list):
    debootstrap then fetches from exactly where apt-get does."""
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list")),
             *sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))]
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        if f.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.+)$", stanza, re.M))
                if "deb" in fields.get("Types", "").split() and suite in fields.get("Suites", "").split() \
                        and fields.get("Enabled", "yes") != "no":
                    return fields["URIs"].split()[0]
        else:
            for line in text.splitlines():
                parts = line.split("#", 1)[0].split()
                if parts[:1] == ["deb"]:
                    rest = [p for p in parts[1:] if not p.startswith("[")]
                    if len(rest) >= 2 and rest[1] == suite:
                        return rest[0]
    raise ImageBuildError(f"no Debian mirror for {suite!r} in /etc/apt/sources.list(.d): debootstrap needs one")


def base_tag() -> str:
    suite = os_codename()
    mirror = debian_mirror(suite)
    return f"{BASE_REPO}:{_hash(RECIPE_VERSION, suite, 'minbase', ','.join(BASE_PACKAGES), mirror)}"


def ensure_base_image(client, progress=lambda m: None) -> str:
    tag = base_tag()
    if _image_exists(client, tag):
        return tag
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("debootstrap is not installed: `apt-get install debootstrap` (the base image is a "
                              "Debian root filesystem built here, since no image registry is reachable)")
    if os.geteuid() != 0:
        raise ImageBuildError(f"building {tag} needs root (debootstrap): run once as root, or load an image "
                              f"with that tag (docker load)")
    suite = os_codename()
    mirror = debian_mirror(suite)
    t0 = time.monotonic()
    progress(f"building base image {tag}: debootstrap {suite} from {mirror} (about a minute, once)")
    with tempfile.TemporaryDirectory(prefix="gameday-rootfs-", dir="/var/tmp") as tmp:
        root = Path(tmp) / "root"
        r = subprocess.run(["debootstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES),
                            suite, str(root), mirror], capture_output=True, text=True)
        if r.returncode != 0:
            raise ImageBuildError(f"debootstrap failed (exit {r.returncode}): "
                                  f"{(r.stderr or r.stdout).strip().splitlines()[-3:]}")
        # docker import from a tar stream of the root filesystem (no registry, no Dockerfile)
        tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        try:
            repo, _, version = tag.partition(":")
            client.api.import_image_from_stream(tar.stdout, repository=repo, tag=version,
                                                changes=[f"LABEL {k}={v}" for k, v in LABELS.items()])
        finally:
            tar.stdout.close()
            tar.wait()
    if not _image_exists(client, tag):
        raise ImageBuildError(f"docker import of the root filesystem did not produce {tag}")
    progress(f"base image {tag} built in {time.monotonic() - t0:.1f}s")
    return tag


# -- the reference service ------------------------------------------------------------------------
def _closure(names: tuple[str, ...]) -> list[metadata.Distribution]:
    """The installed distributions `names` need (their requirements, recursively; no extras)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise ImageBuildError(f"the image needs the Python package {name!r}, not installed here") from None
        seen[key] = dist
        for req in dist.requires or []:
            r = Requirement(req)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
    return sorted(seen.values(), key=lambda d: d.metadata["Name"].lower())


def _sut_files() -> list[Path]:
    return sorted(p for p in SUT_DIR.rglob("*.py") if "__pycache__" not in p.parts)


def service_tag(base: str) -> str:
    deps = [f"{d.metadata['Name']}=={d.version}" for d in _closure(SERVICE_DEPENDENCIES)]
    files = [f"{p.relative_to(SUT_DIR.parent)}:{hashlib.sha256(p.read_bytes()).hexdigest()}" for p in _sut_files()]
    return f"{SERVICE_REPO}:{_hash(RECIPE_VERSION, base, DOCKERFILE, *deps, *files)}"


def _write_context(ctx: Path, base: str) -> None:
    (ctx / "Dockerfile").write_text(DOCKERFILE.format(base=base))
    for p in _sut_files():
        dest = ctx / p.relative_to(SUT_DIR.parent)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dest)
    for dist in _closure(SERVICE_DEPENDENCIES):
        copy_distribution(dist, ctx / "site-packages")


def copy_distribution(dist: metadata.Distribution, site: Path, compiled_ok: bool = False) -> None:
    """The installed files of `dist` into `site` (a site-packages directory of the build context).
    Compiled modules only when the caller checked the image's python can load them (compiled_ok)."""
    for f in dist.files or []:
        if f.parts[0] == ".." or "__pycache__" in f.parts:
            continue  # scripts outside site-packages; caches are rebuilt for the image's python
        if f.suffix in (".so", ".pyd") and not compiled_ok:
            raise ImageBuildError(f"{dist.metadata['Name']} is not pure Python ({f}): it cannot be copied into "
                                  f"the image; use your own image (docs/docker.md)")
        src = Path(dist.locate_file(f))
        if src.is_file():
            dest = site / f
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)


def ensure_service_image(client, progress=lambda m: None) -> str:
    """The reference service's image tag, built (base image first) if this daemon lacks it."""
    base = ensure_base_image(client, progress)
    tag = service_tag(base)
    if _image_exists(client, tag):
        return tag
    t0 = time.monotonic()
    progress(f"building service image {tag} from sut/")
    with tempfile.TemporaryDirectory(prefix="gameday-build-") as tmp:
        _write_context(Path(tmp), base)
        build_offline(client, tmp, tag)
    progress(f"service image {tag} built in {time.monotonic() - t0:.1f}s")
    _remove_older(client, SERVICE_REPO, keep=tag)
    return tag


def build_offline(client, context_dir: str, tag: str) -> None:
    """Build `tag` from a context directory the harness wrote, with the classic builder and no
    network: FROM names a local image, so nothing is pulled."""
    import docker.errors

    try:
        client.images.build(path=context_dir, tag=tag, rm=True, forcerm=True, network_mode="none",
                            labels=LABELS, pull=False)
    except docker.errors.BuildError as e:
        lines = [c.get("stream", c.get("error", "")) for c in e.build_log]
        raise ImageBuildError(f"building {tag} failed: {e.msg}; last build output: {''.join(lines)[-800:]}") from None


def _remove_older(client, repo: str, keep: str) -> None:
    """Every edit of sut/ makes a new service image: drop the earlier ones no container uses."""
    import docker.errors

    for img in client.images.list(name=repo):
        for t in img.tags:
            if t != keep:
                try:
                    client.images.remove(t)
                except docker.errors.APIError:
                    pass  # in use by a running environment's containers: kept


def check_user_image(client, image: str) -> str:
    """A user's image must already be in the daemon: the harness never pulls (no registry here)."""
    if not _image_exists(client, image):
        raise ImageBuildError(f"docker image {image!r} (config docker.image) is not in the local Docker daemon: "
                              f"build or load it first (`docker build -t {image} .` or `docker load -i image.tar`); "
                              f"gameday never pulls from a registry")
    return image
