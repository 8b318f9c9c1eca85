"""The package's shape: no import cycles, the core never imports training, no lazy imports.

Read from the source with ``ast`` (nothing is imported), so a cycle that Python happens
to tolerate at run time is still found.
"""

import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "rnnlab"
CORE = {"rnnlab.cells", "rnnlab.initializers", "rnnlab.engine", "rnnlab.layers",
        "rnnlab.gradflow", "rnnlab.torch_interop", "rnnlab.checks", "rnnlab.errors",
        "rnnlab.plots", "rnnlab.run_folder", "rnnlab.lm", "rnnlab.onednn"}
TRAINING = ("rnnlab.training", "rnnlab.sweeps")
# Commands that act on a trained run (python -m ...): applications, not libraries.
COMMANDS = {"rnnlab.sample"}


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(REPO).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str) -> dict[str, bool]:
  """{imported rnnlab module: at module level} for module ``name``."""
  tree = ast.parse(MODULES[name].read_text())
  top_level = {id(node) for node in tree.body}
  found = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      # `from rnnlab.tasks import base` imports the submodule when there is one.
      targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES
                 else node.module for a in node.names]
    else:
      continue
    for target in targets:
      if target.split(".")[0] == "rnnlab":
        found[target] = found.get(target, False) or id(node) in top_level
  return found


GRAPH = {name: set(imports(name)) for name in MODULES}


def reachable(start: str) -> set[str]:
  seen, todo = set(), [start]
  while todo:
    for nxt in GRAPH.get(todo.pop(), ()):
      if nxt not in seen:
        seen.add(nxt)
        todo.append(nxt)
  return seen


def test_the_graph_sees_every_module_and_its_imports():
  assert {"rnnlab.training.trainer", "rnnlab.sweeps.execute", "rnnlab.tasks.seq2seq"} <= set(MODULES)
  assert "rnnlab.training.job" in GRAPH["rnnlab.training.trainer"]
  assert "rnnlab.tasks.base" in GRAPH["rnnlab.tasks.synthetic"]


def test_no_import_cycles():
  cycles = sorted(name for name in MODULES if name in reachable(name))
  assert cycles == [], f"modules on an import cycle: {cycles}"


def test_the_core_and_the_libraries_never_import_training():
  outside = [n for n in MODULES if not n.startswith(TRAINING) and n not in COMMANDS]
  offenders = {n: sorted(m for m in reachable(n) if m.startswith(TRAINING)) for n in outside}
  assert {n: v for n, v in offenders.items() if v} == {}
  for name in CORE:  # the core reads only the core
    assert reachable(name) <= CORE, (name, sorted(reachable(name) - CORE))


def test_nothing_imports_a_command():
  assert {n: sorted(GRAPH[n] & COMMANDS) for n in MODULES if GRAPH[n] & COMMANDS} == {}
  assert COMMANDS <= set(MODULES)


def test_training_never_imports_sweeps():
  for name in MODULES:
    if name.startswith("rnnlab.training"):
      assert not [m for m in reachable(name) if m.startswith("rnnlab.sweeps")], name


def test_no_lazy_imports_between_rnnlab_modules():
  """Imports inside functions hide dependencies (and cycles); every one is at module level."""
  lazy = {n: [m for m, top in imports(n).items() if not top] for n in MODULES}
  assert {n: v for n, v in lazy.items() if v} == {}
