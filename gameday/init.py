"""`gameday init`: start a team's own repository on gameday.

Writes, in the target directory, what `gameday run` needs to pass there: a commented gameday.toml
(the shipped defaults) whose [failover] section points at an example failover function (a copy of
the reference one, to be replaced by the team's), one example scenario using the fixtures, and
the nightly CI workflow. An existing file is never overwritten: it is named as skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

EXAMPLE_HANDLER = "failover/failover_lambda.py"
CONFIG_HEADER = """\
# Written by `gameday init`. [failover] points at failover/failover_lambda.py, a copy of gameday's
# reference function: replace it with your own (docs/failover.md). Your scenarios live in
# scenarios/ (docs/scenarios.md); `gameday run` runs gameday's built-in suite and yours.
"""
HANDLER_COMMENT = "   # your failover function: path/to/file.py:function or module:function"
HANDLER_HEADER = '''\
# Your failover Lambda goes here (written by `gameday init` as a copy of gameday's reference
# function, gameday.sut.failover_lambda). gameday runs it as AWS Lambda would, from the SNS
# notification of each alarm; docs/failover.md says how to configure your own.
'''


@dataclass(frozen=True)
class InitFile:
    path: str        # relative to the target directory
    text: str


def _template(name: str) -> str:
    return resources.files("gameday").joinpath("templates", *name.split("/")).read_text()


def render_config(handler: str, *, header: str = CONFIG_HEADER, handler_comment: str = HANDLER_COMMENT) -> str:
    """The shipped gameday.toml with its failover handler; the repository's own gameday.toml is this
    with the reference handler and no init header (a test keeps the two from drifting)."""
    # markers, not str.format: the file's own comments hold {placeholders} of gameday's config
    text = _template("gameday.toml")
    for marker, value in (("@INIT_HEADER@", header), ("@HANDLER@", handler), ("@HANDLER_COMMENT@", handler_comment)):
        text = text.replace(marker, value)
    return text


def init_files() -> list[InitFile]:
    reference = resources.files("gameday.sut").joinpath("failover_lambda.py").read_text()
    return [
        InitFile("gameday.toml", render_config(f"{EXAMPLE_HANDLER}:handler")),
        InitFile(EXAMPLE_HANDLER, HANDLER_HEADER + reference),
        InitFile("scenarios/__init__.py", '"""This team\'s own gameday scenarios (docs/scenarios.md)."""\n'),
        InitFile("scenarios/test_example.py", _template("scenarios/test_example.py")),
        InitFile(".github/workflows/gameday-nightly.yml", _template("workflows/gameday-nightly.yml")),
    ]


def init(target: Path, echo=print) -> list[Path]:
    """Write every file that does not exist yet; one line per file written or skipped. Returns the
    files written."""
    written = []
    for f in init_files():
        dest = target / f.path
        if dest.exists():
            echo(f"  skipped {f.path}: exists (not overwritten)")
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "x") as out:   # "x": never overwrite, even a file created since the check
            out.write(f.text)
        echo(f"  wrote   {f.path}")
        written.append(dest)
    return written
