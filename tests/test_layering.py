"""The package layering of docs/design.md: no package imports one above it.

Every ``import`` in every module counts, function-level ones included (a lazy
import is still a dependency).
"""

import ast
import pathlib

import kertransfer

ROOT = pathlib.Path(kertransfer.__file__).parent

# docs/design.md, "Architecture": the rank of each package (lower is more basic).
RANK = {
    "errors": 1, "validation": 1, "version": 1, "_choices": 1, "_fs": 1, "_log": 1,
    "_plot": 1, "_seeds": 1, "_serializables": 1, "_graphs": 1,
    "backbones": 2,
    "data": 3,
    "freezing": 4,
    "models": 5,
    "training": 6, "callbacks": 6, "optimizers": 6,
    "tuning": 7,
    "methods": 8,
    "serving": 8,
    "insight": 9,
    "cli": 10, "__main__": 10,
}
# Packages of the same rank that must not know each other.
APART = {frozenset({"methods", "serving"})}


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "kertransfer" else None


def _imports(path: pathlib.Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "kertransfer":
                yield from ((node.lineno, f"kertransfer.{a.name}") for a in node.names)
            else:
                yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names)


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        package = _package(".".join(parts))
        if package is not None:  # the top-level facade may name every package
            yield path, package


def test_every_package_has_a_rank():
    found = {package for _, package in _modules()}
    assert found <= set(RANK), sorted(found - set(RANK))


def test_no_package_imports_one_above_it():
    wrong = []
    for path, package in _modules():
        for line, target in _imports(path):
            other = _package(target)
            if other is None or other == package:
                continue
            if RANK[other] > RANK[package] or frozenset({package, other}) in APART:
                wrong.append(f"{path.relative_to(ROOT.parent)}:{line} ({package}) imports "
                             f"{target} ({other})")
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_function_level_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from kertransfer.cli import main\n")
    assert [t for _, t in _imports(module)] == ["kertransfer.cli"]


# Lazy on purpose: the facade, kertransfer.data's names, the command line (it parses
# before importing the library), a tuner child (it runs the user's set-up first) and
# the export runtime (it runs in a fresh process without kertransfer when it can).
LAZY = ("__init__.py", "data/__init__.py", "tuning/child.py", "serving/runtime.py")


def test_library_modules_import_kertransfer_at_the_top():
    wrong = []
    for path, _ in _modules():
        rel = path.relative_to(ROOT).as_posix()
        if rel in LAZY or rel.startswith("cli/"):
            continue
        tree = ast.parse(path.read_text())
        top = {id(node) for node in tree.body}
        wrong += [f"{rel}:{node.lineno} {node.module}" for node in ast.walk(tree)
                  if isinstance(node, ast.ImportFrom) and id(node) not in top
                  and (node.module or "").startswith("kertransfer")]
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_a_private_name_of_another_package():
    wrong = []
    for path, package in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kertransfer."):
                other = _package(node.module)
                if other != package and not other.startswith("_") and other != "version":
                    wrong += [f"{path.relative_to(ROOT.parent)}:{node.lineno} {node.module}."
                              f"{a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.startswith("__")]
    assert not wrong, "\n".join(wrong)


# docs/design.md, "Architecture": module and function sizes.
MODULE_LINES = 400
FUNCTION_LINES = 62  # code lines: no docstring, blank or comment lines


def _code_lines(node, lines) -> int:
    body = node.body
    first = body[0]
    docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
        and isinstance(first.value.value, str)
    start = first.end_lineno if docstring else first.lineno - 1
    return sum(1 for line in lines[start:node.end_lineno]
               if line.strip() and not line.strip().startswith("#"))


def test_no_module_or_function_is_longer_than_the_design_allows():
    too_long = []
    for path in sorted(ROOT.rglob("*.py")):
        text = path.read_text()
        lines = text.splitlines()
        if len(lines) > MODULE_LINES:
            too_long.append(f"{path.relative_to(ROOT)}: {len(lines)} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = _code_lines(node, lines)
                if n > FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {n}")
    assert not too_long, too_long


def test_the_size_check_counts_code_lines_only():
    text = 'def f():\n    """Doc\n    string."""\n    # a comment\n\n    a = 1\n    return a\n'
    node = ast.parse(text).body[0]
    assert _code_lines(node, text.splitlines()) == 2
