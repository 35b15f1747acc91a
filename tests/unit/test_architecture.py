"""The layout rules of docs/architecture.md hold: module sizes, who imports whom, nothing done
at import, Lua shipped as package data, and documents that match the code."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from dispatcher.store.scripts import load

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "dispatcher"
LUA = PACKAGE / "store" / "lua"
ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text()
RELIABILITY = (ROOT / "docs" / "reliability.md").read_text()


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at its top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_no_module_is_over_its_size_limit() -> None:
    too_long = {}
    for path in sources():
        limit = 600 if "sandbox" in path.relative_to(PACKAGE).parts else 400
        lines = len(path.read_text().splitlines())
        if lines > limit:
            too_long[str(path.relative_to(ROOT))] = lines
    assert too_long == {}


def test_the_producer_and_the_api_never_import_the_worker_runtime() -> None:
    importers = [PACKAGE / "producer.py", *sorted((PACKAGE / "api").glob("*.py"))]
    for path in importers:
        runtime = {
            m
            for m in imported_modules(path)
            if m.startswith(("dispatcher.worker", "dispatcher.delivery"))
        }
        assert runtime == set(), f"{path.relative_to(ROOT)} imports {runtime}"
    loaded = run_python(
        "import sys, dispatcher, dispatcher.producer, dispatcher.api.app\n"
        "print(sorted(m for m in ('dispatcher.worker', 'dispatcher.delivery', 'qiniu')"
        " if m in sys.modules))"
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "[]"


def test_importing_the_package_builds_nothing_even_with_broken_settings() -> None:
    broken = {"DISPATCHER_LOG_FORMAT": "xml", "DISPATCHER_WORKER_CONCURRENCY": "many"}
    imported = run_python(
        "import dispatcher, dispatcher.worker, dispatcher.producer, dispatcher.api, dispatcher.cli",
        **broken,
    )
    assert imported.returncode == 0, imported.stderr
    # The settings are read on first use: that is where a broken variable is named.
    used = run_python("import dispatcher.worker\ndispatcher.worker.app", **broken)
    assert used.returncode != 0
    assert "log_format" in used.stderr and "worker_concurrency" in used.stderr


def test_celery_finds_the_lazily_built_app_by_the_module_name() -> None:
    found = run_python(
        "from celery.app.utils import find_app\n"
        "app = find_app('dispatcher.worker')\n"
        "print(app.main, sorted(t for t in app.tasks if t.startswith('dispatcher.')))"
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.split() == [
        "dispatcher",
        "['dispatcher.deliver',",
        "'dispatcher.ring',",
        "'dispatcher.webhook']",
    ]


def test_code_cites_only_documents_in_the_repository() -> None:
    outside = re.compile(
        r"SPEC\b|§|RELIABILITY\.md|(?<!docs/)providers\.md|PERFORMANCE\.md|STYLE\.md"
        r"|NOTES-round|\.\./shared"
    )
    cited = re.compile(r"docs/[\w-]+\.md")
    offenders, missing = [], set()
    for path in [*sources(), *LUA.glob("*.lua"), *(ROOT / "tests").rglob("*.py")]:
        text = path.read_text()
        if path != Path(__file__) and outside.search(text):
            offenders.append(str(path.relative_to(ROOT)))
        missing.update(doc for doc in cited.findall(text) if not (ROOT / doc).exists())
    assert offenders == []
    assert missing == set()


def test_every_lua_script_ships_as_package_data_and_loads() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "store/lua/*.lua" in pyproject["tool"]["setuptools"]["package-data"]["dispatcher"]
    scripts = sorted(p.stem for p in LUA.glob("*.lua") if p.stem != "lib")
    assert scripts
    for name in scripts:
        script = load(name)
        assert script.sha == load(name).sha
        names = [slot.name for slot in (*script.keys, *script.args)]
        assert all(re.fullmatch(r"[a-z_][a-z0-9_]*", n) for n in names), names


@pytest.mark.parametrize("name", sorted(p.stem for p in LUA.glob("*.lua") if p.stem != "lib"))
def test_the_architecture_document_lists_each_script_with_its_keys(name: str) -> None:
    row = next((line for line in ARCHITECTURE.splitlines() if f"`{name}.lua`" in line), None)
    assert row is not None, f"{name}.lua is not in docs/architecture.md"
    for key in load(name).keys:
        assert key.name in row, f"{name}.lua's key {key.name} is not in its row"


def test_the_reliability_document_names_an_existing_test_for_each_fault_and_invariant() -> None:
    rows = {
        match.group(1): match.group(2)
        for match in re.finditer(r"^\| (F\d+|I\d) \|(.*)$", RELIABILITY, re.MULTILINE)
    }
    assert set(rows) == {f"F{n}" for n in range(1, 25)} | {f"I{n}" for n in range(1, 5)}
    for name, row in rows.items():
        tests = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", row)
        if not tests:
            assert "not yet covered" in row and int(name[1:]) >= 16, name
        for file, function in tests:
            assert f"def {function}(" in (ROOT / file).read_text(), f"{name}: {file}::{function}"
