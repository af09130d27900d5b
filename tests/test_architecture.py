"""The layer rules of DESIGN.md hold, and the contracts that check them can fail.

import-linter reads the contracts from pyproject.toml. Each deliberate violation below is made in a
copy of the tree, so a broken contract here proves the contract would catch that import on main.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(
    not LINT_IMPORTS.exists(), reason="import-linter is not installed (requirements-dev.txt)"
)


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    root.mkdir()
    shutil.copy(PROJECT / "pyproject.toml", root)
    for package in ("services", "ui"):
        shutil.copytree(
            PROJECT / package, root / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return root


def test_every_layer_contract_is_kept_on_this_tree() -> None:
    result = _lint(PROJECT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("services/models.py", "import streamlit", "services never import streamlit"),
        ("services/models.py", "import ui.format", "ui may use services; services never use ui"),
        (
            "services/sandbox/store.py",
            "import services.enkash",
            "the sandbox shares no code with the EnKash client or the ledger",
        ),
        ("services/models.py", "import services.store", "no import cycles between services"),
        (
            "services/bulk.py",
            "import services.desk",
            "only ui and the worker entry point hold the Desk",
        ),
    ],
    ids=[
        "streamlit-in-services",
        "services-import-ui",
        "sandbox-imports-client",
        "cycle",
        "use-case-takes-the-desk",
    ],
)
def test_a_deliberate_violation_breaks_its_contract(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    root = _copy(tmp_path)
    path = root / module
    path.write_text(path.read_text() + f"\n{line}  # deliberate violation\n")
    result = _lint(root)
    assert result.returncode != 0, result.stdout
    broken = [text for text in result.stdout.splitlines() if " BROKEN" in text]
    assert any(text.startswith(contract) for text in broken), result.stdout
