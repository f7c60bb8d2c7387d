"""requirements.lock: the runtime dependencies pinned with hashes (`make lock` writes it, the tests check it)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from itertools import takewhile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"
LOCK = REPO / "requirements.lock"
# The image's interpreter and platform, whatever machine runs `make lock`.
TARGET = ["--python-version", "3.11", "--python-platform", "x86_64-unknown-linux-gnu"]
RECORDED = "# compiled from [project].dependencies:"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


@dataclass
class Pin:
    version: str
    hashes: int = 0
    via: list[str] = field(default_factory=list)


def declared(pyproject: Path = PYPROJECT) -> list[str]:
    """[project].dependencies, normalized (spacing, order of specifiers, name case) and sorted."""
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return sorted(str(Requirement(d)) for d in deps)


def recorded(lock_text: str) -> list[str]:
    """The dependency list the lock's header says it was compiled from."""
    lines = lock_text.splitlines()
    if RECORDED not in lines:
        return []
    after = lines[lines.index(RECORDED) + 1:]
    return [line.removeprefix("#   ") for line in takewhile(lambda line: line.startswith("#   "), after)]


def pins(lock_text: str) -> dict[str, Pin]:
    """Each pinned distribution (canonical name) with its version, hash count and `# via` annotations."""
    found: dict[str, Pin] = {}
    current: Pin | None = None
    for line in lock_text.splitlines():
        stripped = line.strip()
        if m := _PIN.match(line):
            current = found[canonicalize_name(m.group(1))] = Pin(m.group(2))
        elif current and stripped.startswith("--hash="):
            current.hashes += 1
        elif current and stripped.startswith("#") and line.startswith(" "):
            via = stripped.lstrip("#").strip().removeprefix("via").strip()
            if via:
                current.via.append(via)
    return found


def problems(pyproject: Path = PYPROJECT, lock: Path = LOCK) -> list[str]:
    """Every way the lock and pyproject.toml's runtime dependencies disagree (empty: they agree)."""
    text = lock.read_text()
    wanted, locked = declared(pyproject), pins(text)
    out: list[str] = []
    if recorded(text) != wanted:
        out.append(f"{pyproject.name} [project].dependencies changed since {lock.name} was compiled "
                   f"(recorded {recorded(text)}, now {wanted})")
    for req in map(Requirement, wanted):
        if req.marker and not req.marker.evaluate():
            continue
        pin = locked.get(canonicalize_name(req.name))
        if pin is None:
            out.append(f"{req} is not pinned in {lock.name}")
        elif not req.specifier.contains(pin.version, prereleases=True):
            out.append(f"{req} is not satisfied by the pinned {req.name}=={pin.version}")
    names = {canonicalize_name(Requirement(r).name) for r in wanted}
    for name, pin in sorted(locked.items()):
        if pin.hashes == 0:
            out.append(f"{name}=={pin.version} has no --hash")
        if any(v.endswith("(pyproject.toml)") for v in pin.via) and name not in names:
            out.append(f"{name} is pinned as a direct dependency but {pyproject.name} no longer asks for it")
    return out


def write(extra: list[str]) -> None:
    """Compile the lock with uv (keeping existing pins unless `extra` says --upgrade) and record its input."""
    command = [sys.executable, "-m", "uv", "pip", "compile", str(PYPROJECT), "--generate-hashes", *TARGET,
               "--custom-compile-command", "make lock", "--quiet", "--output-file", str(LOCK), *extra]
    subprocess.run(command, check=True, cwd=REPO)  # noqa: S603 (our interpreter, fixed arguments)
    header, _, body = LOCK.read_text().partition("\n#    make lock\n")
    record = "".join(f"#   {r}\n" for r in declared())
    LOCK.write_text(f"{header}\n#    make lock\n{RECORDED}\n{record}{body}")


def main(argv: list[str]) -> int:
    if argv[:1] == ["check"]:
        found = problems()
        for problem in found:
            print(f"requirements.lock: {problem}; run `make lock`", file=sys.stderr)
        return 1 if found else 0
    if argv[:1] == ["write"]:
        write(argv[1:])
        return 0
    print("usage: scripts/lock.py check | write [uv pip compile options, e.g. --upgrade]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
