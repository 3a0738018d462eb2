"""Architecture rules of the tumorcls package: what may import what, and what importing it may not do.

Static checks read every module's syntax tree (imports anywhere in a module count, lazy ones inside functions
too); the import check runs in a fresh interpreter, so that nothing this test session loaded hides a change.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.paths import REPO

PACKAGE = REPO / "tumorcls"
BENCH = PACKAGE / "bench"
MAX_FUNCTION_LINES = 60
KERAS_TOP_LEVEL = {"tensorflow", "keras", "tf_keras"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> Iterator[tuple[Path, ast.Module]]:
    """The package's modules; files under a folder whose name is no identifier (tumorcls/hydra-plugins: Hydra's
    plugin namespace, put on sys.path by train.py) are not part of it."""
    for path in sorted(PACKAGE.rglob("*.py")):
        if all(part.isidentifier() for part in path.relative_to(PACKAGE).parent.parts):
            yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def is_bench(path: Path) -> bool:
    return BENCH in path.parents


def may_import_keras(path: Path) -> bool:
    """The Keras export module, the Keras inference backend, and the Keras peer benchmark (its own interpreter):
    today tumorcls/export/to_keras.py, tumorcls/inference/backends/keras_h5.py, tumorcls/bench/peer_keras.py."""
    return "keras" in path.stem


def _resolve_relative(node: ast.ImportFrom, path: Path) -> str:
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
    return ".".join([*base, node.module] if node.module else base)


def imported_names(tree: ast.Module, path: Path) -> set[str]:
    """Every module name an import statement (or a literal ``importlib.import_module``) in the file names."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_relative(node, path) if node.level else (node.module or "")
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


def test_the_rules_see_the_package() -> None:
    found = {module_name(path) for path, _ in modules()}
    assert {"tumorcls", "tumorcls.bench.train_eval", "tumorcls.export.to_keras"} <= found


def test_imports_are_resolved_including_lazy_and_relative_ones() -> None:
    source = "import os\nfrom . import sibling\nfrom ..bench import peer\n\ndef f():\n    import tensorflow as tf\n"
    path = PACKAGE / "data" / "example.py"  # only named, never written
    names = imported_names(ast.parse(source), path)
    assert {"os", "tumorcls.data.sibling", "tumorcls.bench.peer", "tensorflow"} <= names


# The stages, bottom to top, and what each may import besides itself. "core" is the top-level modules that every
# stage shares (errors, labels, atomic writes, the device resolver, the numpy softmax, the run-folder layout...);
# "model_file" is the contract a model file carries, written by export and read by inference.
CORE = "core"
LAYERS: dict[str, frozenset[str]] = {
    CORE: frozenset(),
    "data": frozenset({CORE}),
    "model_file": frozenset({CORE, "data"}),
    "models": frozenset({CORE, "data"}),
    "inference": frozenset({CORE, "data", "model_file", "models"}),
    "evaluation": frozenset({CORE, "data", "models", "inference"}),
    "training": frozenset({CORE, "data", "models", "evaluation"}),
    "export": frozenset({CORE, "data", "model_file", "models", "inference"}),
    "serve": frozenset({CORE, "data", "model_file", "inference"}),
    "cli": frozenset({CORE, "data", "model_file", "inference", "evaluation", "serve"}),
}
LAYERS["api"] = frozenset({CORE, "inference"})  # the package itself: tumorcls.load, imported when called
LAYERS["bench"] = frozenset(LAYERS) - {"bench", "cli", "api"}  # measures every stage; nothing imports it


def stage_of(module: str) -> str:
    """``tumorcls.inference.backends.base`` -> ``inference``; a top-level module is core unless it is a stage;
    the package's own ``__init__`` is the Python API's front door."""
    parts = module.split(".")
    if len(parts) == 1:
        return "api"
    return parts[1] if parts[1] in LAYERS else CORE


def layering_violations(imports: dict[str, set[str]], known: set[str]) -> list[str]:
    """``module imports name`` for every import of a tumorcls module that the table does not allow."""
    found = []
    for module, names in sorted(imports.items()):
        stage = stage_of(module)
        for name in sorted(names):
            target = name if name in known else name.rpartition(".")[0]
            if target not in known:
                continue
            other = stage_of(target)
            if other != stage and other not in LAYERS[stage]:
                found.append(f"{module} ({stage}) imports {target} ({other})")
    return found


def product_imports() -> tuple[dict[str, set[str]], set[str]]:
    imports = {module_name(path): imported_names(tree, path) for path, tree in modules()}
    return imports, set(imports)


def test_every_stage_imports_only_what_the_layer_table_allows() -> None:
    imports, known = product_imports()
    assert {stage_of(m) for m in known} == set(LAYERS)  # every stage of the table exists, and nothing else
    assert layering_violations(imports, known) == []


def test_the_layer_table_catches_an_upward_import() -> None:
    known = {"tumorcls.inference.predict", "tumorcls.export.run", "tumorcls.errors", "tumorcls.model_file"}
    imports = {
        "tumorcls.inference.predict": {"tumorcls.export.run", "tumorcls.errors", "tumorcls.model_file.read_metadata"},
        "tumorcls.model_file": {"tumorcls.export.run.export_checkpoint"},
    }
    assert layering_violations(imports, known) == [
        "tumorcls.inference.predict (inference) imports tumorcls.export.run (export)",
        "tumorcls.model_file (model_file) imports tumorcls.export.run (export)",
    ]


def import_cycles(imports: dict[str, set[str]], known: set[str]) -> list[list[str]]:
    """Groups of modules that import each other, directly or round a loop (package ``__init__`` re-exports left
    out: a package imports its own modules by design); each group sorted."""
    graph = {m: {n for n in names if n in known and n != m and not _is_package(n)} for m, names in imports.items()}
    graph = {m: targets for m, targets in graph.items() if not _is_package(m)}
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        order[v] = low[v] = len(order)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in order:
            visit(v)
    return sorted(cycles)


def _is_package(module: str) -> bool:
    return (PACKAGE.parent / Path(*module.split(".")) / "__init__.py").exists()


def test_no_two_modules_import_each_other() -> None:
    assert import_cycles(*product_imports()) == []


def test_the_cycle_check_sees_a_lazy_loop() -> None:
    known = {"tumorcls.inference.gradcam", "tumorcls.inference.backends.torch_checkpoint", "tumorcls.errors"}
    imports = {
        "tumorcls.inference.gradcam": {"tumorcls.inference.backends.torch_checkpoint", "tumorcls.errors"},
        "tumorcls.inference.backends.torch_checkpoint": {"tumorcls.inference.gradcam"},
    }
    assert import_cycles(imports, known) == [sorted(known - {"tumorcls.errors"})]


def test_only_the_keras_modules_import_tensorflow_or_keras() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for path, tree in modules()
        if not may_import_keras(path)
        for name in sorted(imported_names(tree, path))
        if name.split(".")[0] in KERAS_TOP_LEVEL
    ]
    assert offenders == []
    allowed = sorted(str(path.relative_to(PACKAGE.parent)) for path, _ in modules() if may_import_keras(path))
    assert "tumorcls/export/to_keras.py" in allowed and "tumorcls/bench/peer_keras.py" in allowed


def test_no_function_is_longer_than_60_lines() -> None:
    too_long = [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path, tree in modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert too_long == []


def test_every_module_has_a_docstring() -> None:
    missing = [str(path.relative_to(PACKAGE.parent)) for path, tree in modules() if not ast.get_docstring(tree)]
    assert missing == []


# Imports tumorcls, then every product module under it (not the benchmarks, not ``__main__`` entry points),
# package before its modules, and after each import names what changed: the environment, new modules without a
# spec (stubs), matplotlib's backend setting (read unresolved, so reading it chooses nothing), matplotlib.use calls.
_IMPORT_ALL = r"""
import importlib, json, os, pkgutil, sys

for dependency in json.loads(sys.argv[1]):  # what they do at import is theirs: done before the snapshot
    try:
        importlib.import_module(dependency)
    except Exception:
        pass
tensorflow_before = "tensorflow" in sys.modules
import matplotlib

backend_of = lambda: repr(dict.__getitem__(matplotlib.rcParams, "backend"))
state = {"environ": dict(os.environ), "backend": backend_of(), "known": set(sys.modules), "use": []}
real_use = matplotlib.use
matplotlib.use = lambda *a, **k: (state["use"].append(repr(a)), real_use(*a, **k))[1]
found = {"imported": [], "errors": [], "environ": [], "stubs": [], "backend": [], "use": [], "tensorflow": None}


def is_stub(name):
    # no spec, planted under a package that was never imported (extension submodules have their parent loaded)
    parent = name.rpartition(".")[0]
    module = sys.modules[name]
    if name == "tensorboard.compat.notf":  # TensorBoard's "no TensorFlow" marker: a stub wherever it is planted
        return True
    return module is not None and getattr(module, "__spec__", 0) is None and bool(parent) and parent not in sys.modules


def check(name):
    environ = dict(os.environ)
    if environ != state["environ"]:
        keys = set(environ) | set(state["environ"])
        found["environ"].append([name, sorted(k for k in keys if environ.get(k) != state["environ"].get(k))])
        state["environ"] = environ
    new = set(sys.modules) - state["known"]
    state["known"] |= new
    stubs = sorted(n for n in new if is_stub(n))
    if stubs:
        found["stubs"].append([name, stubs])
    if backend_of() != state["backend"]:
        found["backend"].append([name, backend_of() + " (was " + state["backend"] + ")"])
        state["backend"] = backend_of()
    if state["use"]:
        found["use"].append([name, list(state["use"])])
        state["use"].clear()
    if found["tensorflow"] is None and "tensorflow" in sys.modules:
        found["tensorflow"] = name


if tensorflow_before:
    found["tensorflow"] = "a third-party dependency, at import"


package = sys.argv[2]
queue = [package]
while queue:
    name = queue.pop(0)
    try:
        module = importlib.import_module(name)
    except Exception as exc:
        found["errors"].append([name, type(exc).__name__ + ": " + str(exc)])
        continue
    found["imported"].append(name)
    check(name)
    for info in pkgutil.iter_modules(getattr(module, "__path__", []), name + "."):
        if info.name != package + ".bench" and not info.name.endswith(".__main__"):
            queue.append(info.name)
print("RESULT " + json.dumps(found))
"""


def third_party_imports_at_module_level() -> list[str]:
    """What product modules import when they load (not inside functions), TensorFlow/Keras left out."""
    names: set[str] = set()
    for path, tree in modules():
        if is_bench(path):
            continue
        statements = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
        for node in tree.body:
            if isinstance(node, ast.Try):
                statements += [n for n in node.body if isinstance(n, ast.Import | ast.ImportFrom)]
        for node in statements:
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif not node.level and node.module:
                names.add(node.module)
    return sorted(n for n in names if n.split(".")[0] not in {"tumorcls", "__future__", *KERAS_TOP_LEVEL})


def import_package(package: str, dependencies: list[str], root: Path) -> dict:
    """Runs the import check on ``package`` (found under ``root``) in a fresh interpreter; what it found."""
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, json.dumps(dependencies), package],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=600,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


@pytest.fixture(scope="module")
def import_all() -> dict:
    return import_package("tumorcls", third_party_imports_at_module_level(), PACKAGE.parent)


def test_the_import_check_catches_each_kind_of_change(tmp_path: Path) -> None:
    """A package that does every forbidden thing at import is reported for each, and its benchmarks are skipped."""
    package = tmp_path / "leaky"
    (package / "bench").mkdir(parents=True)
    (package / "__init__.py").write_text('"""A package that changes the process when imported."""\n')
    (package / "env.py").write_text('import os\nos.environ["LEAKY_FLAG"] = "1"\n')
    (package / "stub.py").write_text('import sys, types\nsys.modules["absent.pkg.stub"] = types.ModuleType("s")\n')
    (package / "plots.py").write_text('import matplotlib\nmatplotlib.use("Agg")\n')
    (package / "bench" / "__init__.py").write_text('raise RuntimeError("benchmarks are not imported")\n')
    found = import_package("leaky", [], tmp_path)
    assert found["imported"] == ["leaky", "leaky.env", "leaky.plots", "leaky.stub"] and found["errors"] == []
    assert found["environ"] == [["leaky.env", ["LEAKY_FLAG"]]]
    assert found["stubs"] == [["leaky.stub", ["absent.pkg.stub"]]]
    assert [entry[0] for entry in found["use"]] == ["leaky.plots"]
    assert [entry[0] for entry in found["backend"]] == ["leaky.plots"]
    assert found["tensorflow"] is None


def test_every_product_module_imports(import_all: dict) -> None:
    expected = {module_name(path) for path, _ in modules() if not is_bench(path) and path.stem != "__main__"}
    assert import_all["errors"] == []
    assert set(import_all["imported"]) == expected


def test_importing_the_product_leaves_the_environment_alone(import_all: dict) -> None:
    assert import_all["environ"] == []


def test_importing_the_product_injects_no_stub_modules(import_all: dict) -> None:
    assert import_all["stubs"] == []


def import_time_nodes(tree: ast.Module) -> Iterator[ast.AST]:
    """The nodes that run when the module is imported: all but the bodies of functions and lambdas."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            stack.extend(ast.iter_child_nodes(node))


def writes_sys_modules(node: ast.AST) -> bool:
    target = None
    if isinstance(node, ast.Assign | ast.Delete):
        target = next((t.value for t in node.targets if isinstance(t, ast.Subscript)), None)
    elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Subscript):
        target = node.target.value
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("setdefault", "update", "pop", "__setitem__")
    ):
        target = node.func.value
    return target is not None and ast.unparse(target) == "sys.modules"


def test_no_product_module_writes_sys_modules_at_import() -> None:
    """Stubs that a spec check cannot tell from extension modules: a write to ``sys.modules`` run at import
    (one inside a function runs only when called: that is the function's job, not an import's side effect)."""
    writes = [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
        for path, tree in modules()
        if not is_bench(path)
        for node in import_time_nodes(tree)
        if writes_sys_modules(node)
    ]
    assert writes == []


def test_the_sys_modules_check_sees_writes_at_import_only() -> None:
    source = "import sys\nsys.modules['a'] = 1\nsys.modules.setdefault('b', 2)\n\ndef f():\n    sys.modules['c'] = 3\n"
    found = [node.lineno for node in import_time_nodes(ast.parse(source)) if writes_sys_modules(node)]
    assert sorted(found) == [2, 3]


def test_importing_the_product_does_not_choose_a_matplotlib_backend(import_all: dict) -> None:
    assert import_all["use"] == []
    assert import_all["backend"] == []


def test_importing_the_product_does_not_load_tensorflow(import_all: dict) -> None:
    assert import_all["tensorflow"] is None
