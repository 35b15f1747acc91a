"""The lock files, the README's install commands, CI and the Dockerfile agree with each other."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
TEST_COMMAND = (
    "pip install -r requirements/dev.txt && pip install --no-deps -e . && python -m pytest"
)


def project() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]  # type: ignore[no-any-return]


def pins(lock: str) -> dict[str, tuple[str, str]]:
    """name -> (version, marker text) of every ``name==version`` line of a lock file."""
    found = {}
    for line in (ROOT / "requirements" / lock).read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+))?", line)
        if match:
            name, version, marker = match.groups()
            found[canonicalize_name(name)] = (version, (marker or "").strip())
    return found


def direct_requirements(extra: str | None) -> list[Requirement]:
    meta = project()
    names = list(meta["dependencies"])  # type: ignore[call-overload]
    if extra:
        names += meta["optional-dependencies"][extra]  # type: ignore[index]
    return [Requirement(text) for text in names]


@pytest.mark.parametrize(("lock", "extra"), [("runtime.txt", None), ("dev.txt", "dev")])
def test_every_dependency_is_pinned_in_the_lock_within_its_range(
    lock: str, extra: str | None
) -> None:
    locked = pins(lock)
    stale = []
    for requirement in direct_requirements(extra):
        name = canonicalize_name(requirement.name)
        if name not in locked:
            stale.append(f"{requirement} is not in requirements/{lock}")
        elif not requirement.specifier.contains(locked[name][0], prereleases=True):
            stale.append(f"{requirement}: requirements/{lock} pins {locked[name][0]}")
    assert not stale, "run requirements/compile (README 'Installing'):\n" + "\n".join(stale)


def test_the_runtime_lock_holds_no_test_tools() -> None:
    runtime = pins("runtime.txt")
    for tool in ("pytest", "schemathesis", "hypothesis", "ruff", "mypy"):
        assert tool not in runtime


def test_locks_have_hashes_for_every_pin() -> None:
    for lock in ("runtime.txt", "dev.txt"):
        text = (ROOT / "requirements" / lock).read_text()
        entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
        for entry in entries:
            if "==" in entry:
                assert "--hash=sha256:" in entry, entry


def test_readme_ci_and_dockerfile_install_from_the_lock() -> None:
    readme = (ROOT / "README.md").read_text()
    assert TEST_COMMAND in readme
    assert (
        "pip install -r requirements/runtime.txt && pip install --no-deps -e . && dispatcher dev"
        in readme
    )
    ci = (ROOT / ".ci" / "run").read_text()
    assert TEST_COMMAND in ci
    assert "-m venv" in ci
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --no-cache-dir -r requirements/runtime.txt" in dockerfile
    assert "--no-deps ." in dockerfile
