"""Checks that requirements.lock matches pyproject.toml and that the running environment is the lock.

Run by scripts/_bootstrap.sh after every install (a warning) and by `scripts/lock --check` in CI (a
failure). It fails when pyproject.toml names a dependency (or an extra of one) that the lock lacks,
when a locked version falls outside what pyproject.toml allows, when the lock holds a package that
nothing needs any more, when an installed version differs from its pin, or when `pip check` finds a
broken requirement: in each case `scripts/lock` refreshes the lock. Needs only the standard library
and `packaging` (a dev dependency).
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = "requirements.lock"
PROJECT = canonicalize_name("yibao")
NEVER_LOCKED = {canonicalize_name("pip")}  # the venv's own installer


@dataclass(frozen=True)
class Pin:
    version: Version
    marker: Marker | None
    hashes: int

    def applies(self) -> bool:
        return self.marker is None or self.marker.evaluate({"extra": ""})


def read_lock(path: Path) -> tuple[dict[NormalizedName, list[Pin]], list[str]]:
    """The lock's pins by name. A requirement spans its line and the `--hash` lines after it."""
    pins: dict[NormalizedName, list[Pin]] = {}
    problems: list[str] = []
    logical: list[str] = []
    current = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        current += " " + line.removesuffix("\\").strip()
        if not line.endswith("\\"):
            logical.append(current.strip())
            current = ""
    if current.strip():
        logical.append(current.strip())
    for entry in logical:
        spec, *hashes = entry.split(" --hash=")
        try:
            req = Requirement(spec)
        except ValueError as exc:
            problems.append(f"{LOCK}: cannot read {spec!r}: {exc}")
            continue
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==":
            problems.append(f"{LOCK}: {req} is not pinned to one exact version")
            continue
        if not hashes:
            problems.append(f"{LOCK}: {req.name} has no --hash")
        pins.setdefault(canonicalize_name(req.name), []).append(
            Pin(Version(specs[0].version), req.marker, len(hashes))
        )
    return pins, problems


def wanted(pyproject: dict[str, object]) -> tuple[list[Requirement], list[Requirement]]:
    """(what the installed project needs: runtime and the dev extra, what building it needs)."""
    project = pyproject["project"]
    assert isinstance(project, dict)
    runtime = [Requirement(r) for r in project.get("dependencies", [])]
    extras = project.get("optional-dependencies", {})
    dev = [Requirement(r) for r in extras.get("dev", [])]
    build_system = pyproject.get("build-system", {})
    assert isinstance(build_system, dict)
    build = [Requirement(r) for r in build_system.get("requires", [])]
    return runtime + dev, build


def main() -> int:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    pins, problems = read_lock(ROOT / LOCK)
    installs, build = wanted(pyproject)
    relock = f"pyproject.toml and {LOCK} disagree: run scripts/lock (and commit both files)"

    # 1. Every dependency pyproject.toml names is locked, at a version it allows (on every platform).
    for req in installs + build:
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"pyproject.toml needs {req}, which {LOCK} lacks")
            continue
        for pin in pins[name]:
            if not req.specifier.contains(pin.version, prereleases=True):
                problems.append(f"pyproject.toml needs {req}, but {LOCK} pins {req.name}=={pin.version}")

    # 2. Here, the installed closure of those requirements (with their extras) is exactly the lock.
    needed: set[NormalizedName] = set()
    queue: list[tuple[Requirement, str, frozenset[str]]] = [
        (r, "pyproject.toml", frozenset()) for r in installs + build
    ]
    seen: set[tuple[NormalizedName, frozenset[str]]] = set()
    while queue:
        req, parent, parent_extras = queue.pop()
        if req.marker is not None and not any(
            req.marker.evaluate({"extra": extra}) for extra in parent_extras or {""}
        ):
            continue
        name = canonicalize_name(req.name)
        if (name, frozenset(req.extras)) in seen:
            continue
        seen.add((name, frozenset(req.extras)))
        needed.add(name)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            if name in pins:
                problems.append(f"{parent} needs {req}, which is locked but not installed")
            elif parent != "pyproject.toml":  # (those were reported above)
                problems.append(f"{parent} needs {req}, which {LOCK} lacks")
            continue
        installed = Version(dist.version)
        if not req.specifier.contains(installed, prereleases=True):
            problems.append(f"{parent} needs {req}, but {req.name} {installed} is installed")
        here = {pin.version for pin in pins.get(name, []) if pin.applies()}
        if name not in pins:
            if parent != "pyproject.toml":  # (those were reported above)
                problems.append(f"{parent} needs {req}, which {LOCK} lacks")
        elif installed not in here:
            locked = ", ".join(map(str, sorted(here))) or "nothing for this platform"
            problems.append(f"{req.name} {installed} is installed, but {LOCK} pins {locked}")
        for child in dist.requires or []:
            queue.append((Requirement(child), req.name, frozenset(req.extras)))
    for name, entries in sorted(pins.items()):
        if name not in needed and any(pin.applies() for pin in entries):
            problems.append(f"{LOCK} pins {name}, which nothing in pyproject.toml needs any more")

    # 3. What is installed but not locked (installed by hand) is only reported: the lock is what counts.
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        if name not in pins and name not in NEVER_LOCKED and name != PROJECT:
            print(f"note: {dist.metadata['Name']} {dist.version} is installed in .venv but not locked")

    # 4. pip's own view of the installed set.
    check = subprocess.run(  # our own interpreter, fixed arguments
        [sys.executable, "-m", "pip", "check"], capture_output=True, text=True, check=False
    )
    if check.returncode != 0:
        problems.append("pip check: " + (check.stdout + check.stderr).strip())

    if problems:
        print(relock, file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print(f"{LOCK} matches pyproject.toml ({sum(map(len, pins.values()))} pins) and .venv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
