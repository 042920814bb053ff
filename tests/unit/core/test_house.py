"""The house rules of the package (issue 16, docs/ARCHITECTURE.md "House rules"), checked by
reading the source: small modules, documented public API, no private names across modules,
no statistics in pages, explicit CLI registration, stable public names."""
from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PKG = ROOT / "metacog"
MAX_LINES = 600  # "no module over about 600 lines": the allowance below is for a docstring or two
SLACK = 25
DOC_COVERAGE = 0.90


def _modules():
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def _public_defs(tree: ast.Module):
    """(qualified name, node) of every public function/class and public method of a public class."""
    def walk(body, prefix):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                yield prefix + node.name, node
                if isinstance(node, ast.ClassDef):
                    yield from walk(node.body, prefix + node.name + ".")
    yield from walk(tree.body, "")


def test_no_module_over_about_600_lines():
    big = {str(p.relative_to(ROOT)): n for p in _modules() if (n := p.read_text().count("\n")) > MAX_LINES + SLACK}
    assert not big, f"modules over {MAX_LINES} lines (split them by concern): {big}"


def test_public_definitions_are_documented():
    missing, total = [], 0
    for p in _modules():
        tree = ast.parse(p.read_text())
        rel = str(p.relative_to(ROOT))
        if not ast.get_docstring(tree) and p.name != "__main__.py":
            missing.append(f"{rel}: module docstring")
        for name, node in _public_defs(tree):
            total += 1
            if not ast.get_docstring(node):
                missing.append(f"{rel}:{node.lineno} {name}")
    documented = total - sum(1 for m in missing if "module docstring" not in m)
    share = documented / total
    assert share >= DOC_COVERAGE, (f"{share:.1%} of {total} public definitions documented (goal {DOC_COVERAGE:.0%}); "
                                   f"first undocumented: {missing[:40]}")


def test_no_private_names_imported_across_modules():
    bad = []
    for p in _modules():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("metacog"):
                bad += [f"{p.relative_to(ROOT)}: {node.module}.{a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    assert not bad, f"private names imported from another module (make them public or move the code): {bad}"


BANNED_IN_PAGES = ("metacog.stats", "sklearn", "scipy")


@pytest.mark.parametrize("page", sorted((ROOT / "pages").glob("*.py")), ids=lambda p: p.name)
def test_pages_compute_no_statistics(page):
    """A page reads artifacts, calls the backend (metacog.app and the stages' APIs) and draws;
    metrics, CIs and tests come from the backend, never from a page."""
    tree = ast.parse(page.read_text())
    bad = []
    for node in ast.walk(tree):
        mods = []
        if isinstance(node, ast.ImportFrom) and node.module:
            mods = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        bad += [m for m in mods if any(m == b or m.startswith(b + ".") for b in BANNED_IN_PAGES)]
    assert not bad, f"{page.name} imports statistics directly: {bad}"


def test_cli_registers_every_stage_explicitly():
    src = (PKG / "cli.py").read_text()
    assert "except ImportError" not in src, "a broken import must fail loudly, not drop a subcommand"
    from metacog.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    for cmd in ("study", "summary", "answers", "activations", "probes", "info", "finetune", "evaluate", "runs",
                "cancel", "transfer", "patch", "methods", "sweep", "sweeps", "report", "steer"):
        assert cmd in sub.choices, f"`metacog {cmd}` is not registered"


@pytest.mark.parametrize("module, names", [
    ("metacog." + "confidence", ["parse_confidence", "parse_inline", "read_values"]),
    ("metacog." + "grading", ["grade_short"]),
    ("metacog.data", ["load_dataset"]),
])
def test_stable_public_names_stay_importable(module, names):
    m = importlib.import_module(module)
    for n in names:
        assert callable(getattr(m, n)), f"{module}.{n}"


def test_every_metacog_name_the_benchmarks_and_pages_import_exists():
    """bench/ and pages/ are not imported by the suite; a moved or renamed name must not break them silently."""
    missing = []
    for f in sorted((ROOT / "bench").glob("*.py")) + sorted((ROOT / "pages").glob("*.py")) + [ROOT / "app.py"]:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("metacog"):
                mod = importlib.import_module(node.module)
                missing += [f"{f.name}: {node.module}.{a.name}" for a in node.names
                            if not hasattr(mod, a.name) and importlib.util.find_spec(f"{node.module}.{a.name}") is None]
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("metacog") and importlib.util.find_spec(a.name) is None:
                        missing.append(f"{f.name}: {a.name}")
    assert not missing, f"names imported by benchmarks/pages that metacog no longer has: {missing}"
