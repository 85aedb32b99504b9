"""The shape of the code: every function and method of the package's sources (outside tests/) is
under MAX_LINES lines, so that each can be read in one screen. Counted with ast, from the `def`
line to the function's last line (a nested function counts inside its parent too).
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("gameday", "environments", "loadgen", "faults", "assertions", "scenarios", "reports", "sut", "benchmarks")
MAX_LINES = 80
# generated or run output that may hold .py files but is not source
SKIPPED_DIRS = {"__pycache__", "build", "runs"}


def source_files() -> list[Path]:
    files = []
    for root in ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            parts = path.relative_to(REPO).parts[:-1]
            if not any(p in SKIPPED_DIRS or p.startswith(".") for p in parts):
                files.append(path)
    return files


def long_functions(source: str, filename: str, max_lines: int = MAX_LINES) -> list[str]:
    """'file:line name N lines' for every function or method of `source` with max_lines or more."""
    out = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n >= max_lines:
                out.append(f"{filename}:{node.lineno} {node.name} {n} lines")
    return sorted(out, key=lambda s: (s.split(":")[0], int(s.split(":")[1].split()[0])))


def test_every_function_is_under_the_limit():
    offenders = []
    for path in source_files():
        offenders += long_functions(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    assert not offenders, (f"{len(offenders)} functions have {MAX_LINES} lines or more (split them):\n"
                           + "\n".join(offenders))


def test_the_scan_covers_every_source_folder_and_skips_tests():
    # a wrong root or skip rule would make the limit pass vacuously
    files = source_files()
    for root in ROOTS:
        assert any(p.relative_to(REPO).parts[0] == root for p in files), f"no source file found under {root}/"
    assert REPO / "gameday" / "net.py" in files and REPO / "sut" / "service.py" in files
    assert not any(p.relative_to(REPO).parts[0] == "tests" for p in files)
    assert not any("__pycache__" in p.parts for p in files)


def _function(name: str, body_lines: int, indent: str = "", prefix: str = "def") -> str:
    body = "".join(f"{indent}    x{i} = {i}\n" for i in range(body_lines))
    return f"{indent}{prefix} {name}():\n{body}"


def test_the_check_names_each_long_function_method_and_async_function():
    source = (_function("short", MAX_LINES - 2)                    # 79 lines: allowed
              + _function("exactly_the_limit", MAX_LINES - 1)      # 80 lines: not under the limit
              + "class Box:\n" + _function("method", MAX_LINES + 5, indent="    ")
              + _function("waits", MAX_LINES, prefix="async def")
              + "def outer():\n" + _function("inner", MAX_LINES, indent="    "))
    found = long_functions(source, "pkg/mod.py")
    starts = {line.split()[1]: line for line in found}
    assert set(starts) == {"exactly_the_limit", "method", "waits", "outer", "inner"}, found
    short_len = MAX_LINES - 1
    exact_line = 1 + short_len
    assert starts["exactly_the_limit"] == f"pkg/mod.py:{exact_line} exactly_the_limit {MAX_LINES} lines"
    assert starts["method"].endswith(f" method {MAX_LINES + 6} lines")
    assert starts["inner"].endswith(f" inner {MAX_LINES + 1} lines")
    assert starts["outer"].endswith(f" outer {MAX_LINES + 2} lines")


def test_a_decorated_multiline_signature_counts_from_def_to_its_last_line():
    source = textwrap.dedent('''\
        @decorator
        def f(
            a,
            b,
        ):
            return a
        ''')
    assert long_functions(source, "m.py", max_lines=5) == ["m.py:2 f 5 lines"]
    assert long_functions(source, "m.py", max_lines=6) == []
