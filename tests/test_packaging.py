"""The README's first command installs ``serversync[cli]`` and runs the demo: the command line
must import with the base dependencies and the ``cli`` extra alone, whatever else the
development environment has installed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[([^\]]*)\])?")
_EXTRA = re.compile(r"extra\s*==\s*['\"]([^'\"]+)['\"]")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement(requirement: str) -> tuple[str, frozenset[str]]:
    """A requirement's distribution name and the extras it asks for."""
    match = _NAME.match(requirement.strip())
    assert match, requirement
    extras = frozenset(e.strip() for e in (match.group(2) or "").split(",") if e.strip())
    return _canonical(match.group(1)), extras


def _with_dependencies(wanted: set[tuple[str, frozenset[str]]]) -> set[str]:
    """The distributions of ``wanted`` and everything they require, with the extras asked."""
    found: set[tuple[str, frozenset[str]]] = set()
    todo = list(wanted)
    while todo:
        item = todo.pop()
        if item in found:
            continue
        found.add(item)
        name, extras = item
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for requirement in requires:
            extra = _EXTRA.search(requirement)
            if extra is None or extra.group(1) in extras:
                todo.append(_requirement(requirement.split(";")[0]))
    return {name for name, _ in found}


def _allowed_distributions() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_requirement(r) for r in project["dependencies"]}
    wanted |= {_requirement(r) for r in project["optional-dependencies"]["cli"]}
    return _with_dependencies(wanted | {("serversync", frozenset())})


# Run in a child process: refuse every third-party module whose distribution the base
# dependencies and the cli extra do not bring, then import what the console script imports.
_CHILD = """
import importlib.abc, json, sys
from importlib import metadata
allowed = set(json.loads(sys.argv[1]))
owners = {name: {d.lower().replace("_", "-").replace(".", "-") for d in dists}
          for name, dists in metadata.packages_distributions().items()}
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        top = fullname.partition(".")[0]
        dists = owners.get(top)
        if dists and not dists & allowed:
            raise ModuleNotFoundError(f"{top} (from {sorted(dists)})", name=top)
        return None
sys.meta_path.insert(0, Refuse())
import serversync.cli._commands
import serversync.demo
print("imported")
"""


def test_the_command_line_needs_only_the_cli_extra() -> None:
    allowed = sorted(_allowed_distributions())
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(allowed)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "imported"
