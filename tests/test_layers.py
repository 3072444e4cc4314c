"""Imports only point down the layers DESIGN.md draws: every `samtasks` import of every module, those inside
functions included, is checked against the table below."""

from __future__ import annotations

import ast
from pathlib import Path

import samtasks

PACKAGE = Path(samtasks.__file__).parent

BASE = "utils+structures"  # one layer: boundary dataclasses, masks, image I/O, files
# Layer -> the layers its modules may import besides their own (DESIGN.md, "Layers").
ALLOWED = {
    BASE: set(),
    "data": {BASE},
    "metrics": {BASE},
    "modeling": {BASE},  # modeling/, build.py and checkpoints.py
    "predictor": {"modeling", BASE},
    "tasks": {"predictor", BASE},  # adapters see the model only through the predictor
    "evaluation": {"tasks", "predictor", "modeling", "data", "metrics", BASE},
    "api": {"predictor", "modeling", BASE},  # samtasks/__init__.py: the public core
    "cli": {"api", "evaluation", "tasks", "predictor", "modeling", "data", "metrics", BASE},
}
LAYER_OF = {  # the first part of a module's name after `samtasks`
    "": "api",
    "utils": BASE,
    "structures": BASE,
    "data": "data",
    "metrics": "metrics",
    "modeling": "modeling",
    "build": "modeling",
    "checkpoints": "modeling",
    "predictor": "predictor",
    "tasks": "tasks",
    "evaluation": "evaluation",
    "cli": "cli",
}


def module_name(path: Path, package: Path) -> str:
    parts = ("samtasks", *path.relative_to(package).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, name: str) -> list[tuple[int, str]]:
    """(line, module) of every `samtasks` import in the file of module `name`, relative ones resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.append((node.lineno, target))
    return [(line, target) for line, target in found if target == "samtasks" or target.startswith("samtasks.")]


def layer(module: str) -> str:
    head = module.split(".")[1] if "." in module else ""
    if head not in LAYER_OF:
        raise KeyError(f"{module} is in no layer: add samtasks.{head} to LAYER_OF in tests/test_layers.py")
    return LAYER_OF[head]


def violations(package: Path) -> list[str]:
    out = []
    for path in sorted(package.rglob("*.py")):
        source = module_name(path, package)
        for line, target in imported(path, source):
            have, want = layer(source), layer(target)
            if want != have and want not in ALLOWED[have]:
                out.append(f"{path.relative_to(package.parent)}:{line}: {source} ({have}) imports {target} ({want})")
    return out


def test_every_layer_imports_only_the_layers_below():
    assert ALLOWED.keys() == set(LAYER_OF.values())
    found = violations(PACKAGE)
    assert not found, "imports against the layers of DESIGN.md:\n" + "\n".join(found)


def test_the_check_sees_imports_inside_functions_and_relative_imports(tmp_path):
    fake = tmp_path / "samtasks"
    (fake / "data").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "data" / "__init__.py").write_text("")
    (fake / "data" / "reader.py").write_text("def f():\n    from samtasks.predictor import SamPredictor\n")
    (fake / "data" / "other.py").write_text("from ..tasks import amg\nimport samtasks.evaluation.runner\n")
    found = violations(fake)
    assert [f.split(": ", 1)[1] for f in found] == [
        "samtasks.data.other (data) imports samtasks.tasks (tasks)",
        "samtasks.data.other (data) imports samtasks.evaluation.runner (evaluation)",
        "samtasks.data.reader (data) imports samtasks.predictor (predictor)",
    ]
