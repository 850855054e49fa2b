"""The package's layers: no module imports from a layer above its own."""

import ast
import pathlib

import optimizer3

PACKAGE = pathlib.Path(optimizer3.__file__).parent
# Lowest first. A module may import from its own layer or any below it.
LAYERS = [
    {"errors", "configs", "files", "provenance", "runtime"},
    {"tasks", "learned"},
    {"pretrained"},
    {"optim"},
    {"evaluation"},
    {"meta"},
    {"experiments"},
    {"flags", "cli", "__main__", "__init__"},
]


def _layer(part: str) -> int:
    (index,) = [i for i, names in enumerate(LAYERS) if part in names]
    return index


def _imports(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("optimizer3"):
            parts = node.module.split(".")
            names.update(parts[1:2] or [alias.name for alias in node.names])
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[1] for a in node.names if a.name.startswith("optimizer3."))
    return names


def test_every_module_belongs_to_a_layer_and_imports_only_downwards():
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        part = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for name in _imports(path):
            if name != "__version__" and _layer(name) > _layer(part):
                violations.append(f"{path.relative_to(PACKAGE)} imports optimizer3.{name}")
    assert violations == []


def test_tasks_and_learned_know_nothing_of_each_other():
    for first, second in (("tasks", "learned"), ("learned", "tasks")):
        for path in (PACKAGE / first).rglob("*.py"):
            assert second not in _imports(path), path
