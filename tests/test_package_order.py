"""The packages of opsllm depend one way, as the README's Layout section orders them.

The graph is read from the source with :mod:`ast`, not by importing it: an import inside a function (the
project's way of keeping heavy dependencies off the start-up path) is as much a dependency as one at the top,
and only reading the source sees it without running it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import opsllm

ROOT = Path(opsllm.__file__).parent

# Lowest first; a package may import its own tier and those below it, never one above. Tiers of more than one
# package hold packages that grew up together and still import each other (lab and data), or that must stay
# apart, which test_evaluation_and_training_stay_apart asserts on its own.
TIERS: list[set[str]] = [
    {"errors"},
    {"files", "termination"},
    {"window"},
    {"spec"},
    {"lab", "data", "collectors"},
    {"fusion"},
    {"models"},
    {"evaluation", "training"},
    {"operator"},
    {"cli"},
]
TIER = {package: level for level, packages in enumerate(TIERS) for package in packages}
# The package's own __init__: its body imports errors only. What its lazy __getattr__ imports is the public
# API, bound on a user's first use of a name, not something the modules that read __version__ depend on.
FACADE = "opsllm"
TIER[FACADE] = 0

# Imports that break the order today, in modules outside the change that moved the shared code into fusion and
# models. Each is named by importing file and imported module, so that a new one fails the test, and each must
# still exist, so that the list shrinks when one is fixed.
KNOWN: dict[tuple[str, str], str] = {
    ("opsllm/spec/campaign.py", "opsllm.lab.topology"): "the spec validates targets against the twin's topology",
    ("opsllm/spec/faults.py", "opsllm.lab.topology"): "fault models name the twin's components",
    ("opsllm/spec/target.py", "opsllm.lab.topology"): "a target names one of the twin's components",
    ("opsllm/lab/campaign.py", "opsllm.fusion"): "the twin's campaign fuses the windows it collects",
}


@dataclass(frozen=True)
class Import:
    file: str        # relative to the repository, as a failure names it
    line: int
    source: str      # the importing package
    module: str      # the imported module, dotted
    target: str      # the imported package

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.source} imports {self.module} ({self.target})"


def package_of(parts: tuple[str, ...]) -> str:
    """The package of a module path inside opsllm: its first part, ``window`` for opsllm/window.py."""
    return parts[0].removesuffix(".py") if parts and parts[0] != "__init__.py" else FACADE


def is_module(dotted: str) -> bool:
    path = ROOT.parent.joinpath(*dotted.split("."))
    return path.is_dir() or path.with_suffix(".py").is_file()


def imported_modules(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The opsllm modules an import statement names; ``from opsllm import x`` names opsllm.x where that is a
    module, else the package's own __init__."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[:len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    return [f"{base}.{a.name}" if is_module(f"{base}.{a.name}") else base for a in node.names]


def lazy_facade(tree: ast.Module) -> set[int]:
    """Line numbers of the imports inside the package's own ``__getattr__``."""
    return {n.lineno for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "__getattr__"
            for n in ast.walk(f) if isinstance(n, ast.Import | ast.ImportFrom)}


def imports() -> list[Import]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).parts
        module = ".".join(("opsllm", *parts)).removesuffix(".py").removesuffix(".__init__")
        source = package_of(parts)
        tree = ast.parse(path.read_text(), filename=str(path))
        skip = lazy_facade(tree) if source == FACADE else set()
        for node in ast.walk(tree):   # every statement, inside functions and TYPE_CHECKING blocks too
            if not isinstance(node, ast.Import | ast.ImportFrom) or node.lineno in skip:
                continue
            for name in imported_modules(node, module, path.name == "__init__.py"):
                if name != "opsllm" and not name.startswith("opsllm."):
                    continue
                target = package_of(tuple(name.split(".")[1:2]) or ("__init__.py",))
                if target != source:
                    found.append(Import(str(path.relative_to(ROOT.parent)), node.lineno, source, name, target))
    return found


def test_every_package_has_a_place_in_the_order():
    placed = {package_of(p.relative_to(ROOT).parts) for p in ROOT.rglob("*.py")}
    assert placed <= set(TIER), f"place these in TIERS: {sorted(placed - set(TIER))}"


def test_evaluation_and_training_stay_apart():
    apart = {"evaluation", "training"}
    crossing = [i for i in imports() if {i.source, i.target} == apart]
    assert not crossing, ("evaluation and training must not import each other; move what both need below "
                          "them (opsllm.models, opsllm.fusion):\n" + "\n".join(map(str, crossing)))


def test_no_package_imports_one_above_it():
    upward = [i for i in imports() if TIER[i.target] > TIER[i.source] and (i.file, i.module) not in KNOWN]
    assert not upward, ("these imports reach a package above the importer's (order: "
                        + " -> ".join("/".join(sorted(t)) for t in TIERS) + "):\n" + "\n".join(map(str, upward)))


def test_known_exceptions_still_exist():
    seen = {(i.file, i.module) for i in imports()}
    gone = [f"{file} -> {module}" for file, module in KNOWN if (file, module) not in seen]
    assert not gone, "fixed, so drop them from KNOWN:\n" + "\n".join(gone)
