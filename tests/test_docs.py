"""The README and docs/: every code block at least compiles, every relative link resolves, the front
door stays short. (The README's DAG test runs for real: tests/sandbox/test_sandbox_pytest_plugin.py.)"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def _blocks(language: str) -> list[tuple[str, str]]:
    return [
        (f"{page.relative_to(ROOT)}#{index}", body)
        for page in PAGES
        for index, (lang, body) in enumerate(BLOCK.findall(page.read_text()))
        if lang == language
    ]


def test_the_pages_have_code_to_check() -> None:
    assert len(_blocks("python")) >= 10
    assert len(_blocks("bash")) >= 4


@pytest.mark.parametrize(("where", "code"), _blocks("python"))
def test_python_blocks_compile(where: str, code: str) -> None:
    # Top-level await: the hook's example shows the asynchronous call as a caller would write it.
    compile(code, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)


@pytest.mark.parametrize(("where", "code"), _blocks("bash"))
def test_bash_blocks_parse(where: str, code: str) -> None:
    done = subprocess.run(["bash", "-n"], input=code, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{where}: {done.stderr}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    for target, _anchor in LINK.findall(page.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"


def test_the_readme_is_a_front_door() -> None:
    # The bound: the README gets a stranger running; the reference lives in docs/.
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300
