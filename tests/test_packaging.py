"""The wheel built from this checkout: all of rnnlab and nothing else, importable on its own.

Offline: pip builds the wheel with the setuptools installed here (requirements-dev.txt pins
it; --no-build-isolation --no-index), from a copy of the repository so that the build leaves
no build/ or *.egg-info in the checkout. Also checks that requirements.txt pins every runtime
dependency in pyproject.toml with a version the constraint allows.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = pathlib.Path(__file__).resolve().parents[1]
OTHER_FOLDERS = ("tests", "configs", "experiments", "benchmarks")
COPY_IGNORE = shutil.ignore_patterns(".venv", ".ci-venv", ".git", "runs", "__pycache__",
                                     "*.egg-info", "build", "dist", ".pytest_cache")
PIP_ENV = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}


def pip(*args: str) -> None:
  done = subprocess.run([sys.executable, "-m", "pip", *args], env=PIP_ENV,
                        capture_output=True, text=True, timeout=120, check=False)
  assert done.returncode == 0, (f"pip {' '.join(args)} failed ({done.returncode}):\n"
                                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def rnnlab_sources(root: pathlib.Path) -> set[str]:
  """Paths like 'rnnlab/tasks/mnist.py' of every module under root/rnnlab."""
  return {p.relative_to(root).as_posix() for p in (root / "rnnlab").rglob("*.py")
          if "__pycache__" not in p.parts}


def module_name(path: str) -> str:
  parts = path[:-len(".py")].split("/")
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """(copy of the repo, path of the wheel built from it)."""
  try:
    setuptools_version = importlib.metadata.version("setuptools")
  except importlib.metadata.PackageNotFoundError:
    setuptools_version = "0"
  assert Version(setuptools_version) >= Version("70.1"), (
      f"building the wheel offline needs setuptools >= 70.1 (bdist_wheel built in); found "
      f"{setuptools_version}: install requirements-dev.txt")
  tmp = tmp_path_factory.mktemp("packaging")
  src, out = tmp / "src", tmp / "wheels"
  shutil.copytree(REPO, src, ignore=COPY_IGNORE)
  pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(out), str(src))
  wheels = sorted(out.glob("rnnlab-*.whl"))
  assert len(wheels) == 1, f"expected one rnnlab wheel in {out}, found {wheels}"
  return src, wheels[0]


def test_wheel_holds_every_rnnlab_module_and_nothing_else(built):
  src, wheel = built
  with zipfile.ZipFile(wheel) as zf:
    names = zf.namelist()
  modules = {n for n in names if n.endswith(".py")}
  expected = rnnlab_sources(src)
  assert expected, f"no modules under {src / 'rnnlab'}"
  assert not expected - modules, f"modules missing from the wheel: {sorted(expected - modules)}"
  assert not modules - expected, f"modules in the wheel but not in rnnlab/: {sorted(modules - expected)}"
  strays = [n for n in names if set(n.split("/")[:-1]) & set(OTHER_FOLDERS)]
  assert not strays, f"the wheel holds files from {OTHER_FOLDERS}: {strays}"
  tops = {n.split("/", 1)[0] for n in names} - {"rnnlab"}
  assert len(tops) == 1 and tops.pop().endswith(".dist-info"), (
      f"the wheel holds more than rnnlab/ and its .dist-info: {sorted(tops)}")


def test_wheel_holds_the_sources_rnnlab_compiles(built):
  """rnnlab/onednn.py compiles rnnlab/_onednn/*.cc where it is first used, so the wheel must
  ship them (pyproject's package-data), byte for byte."""
  src, wheel = built
  sources = sorted(p.relative_to(src).as_posix() for p in (src / "rnnlab").rglob("*.cc"))
  assert "rnnlab/_onednn/rnn_ffi.cc" in sources
  with zipfile.ZipFile(wheel) as zf:
    names = set(zf.namelist())
    missing = [s for s in sources if s not in names]
    assert not missing, f"C++ sources missing from the wheel: {missing}"
    for s in sources:
      assert zf.read(s) == (src / s).read_bytes(), f"{s} differs in the wheel"


def test_installed_wheel_imports_every_module(built, tmp_path):
  src, wheel = built
  target, cwd = tmp_path / "site", tmp_path / "cwd"
  cwd.mkdir()
  pip("install", "--no-deps", "--no-index", "-q", "--target", str(target), str(wheel))
  names = sorted(module_name(path) for path in rnnlab_sources(src))
  # -I: neither PYTHONPATH nor the cwd nor the user site on sys.path, so only the wheel's
  # copy of rnnlab (target, put first) can be found; the venv's packages supply the rest.
  script = """
import importlib, json, sys, traceback
sys.path.insert(0, sys.argv[1])
result = {}
for name in json.loads(sys.argv[2]):
  try:
    result[name] = {"file": importlib.import_module(name).__file__}
  except BaseException:
    result[name] = {"error": traceback.format_exc(limit=3)}
print(json.dumps(result))
"""
  done = subprocess.run([sys.executable, "-I", "-c", script, str(target), json.dumps(names)],
                        cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  result = json.loads(done.stdout.strip().splitlines()[-1])
  failed = {name: r["error"] for name, r in result.items() if "error" in r}
  assert not failed, "modules of the installed wheel that do not import:\n" + "\n".join(
      f"{name}:\n{error}" for name, error in failed.items())
  assert pathlib.Path(result["rnnlab"]["file"]).resolve().is_relative_to(target.resolve())
  outside = {n: r["file"] for n, r in result.items()
             if r["file"] and not pathlib.Path(r["file"]).resolve().is_relative_to(target.resolve())}
  assert not outside, f"imported from outside the installed wheel: {outside}"


def read_pins(path: pathlib.Path) -> dict[str, str]:
  """{canonical name: version} of a requirements file; every requirement must be name==version."""
  pins = {}
  for line in path.read_text().splitlines():
    line = line.split(" #", 1)[0].strip()
    if not line or line.startswith(("#", "-r ")):
      continue
    req = Requirement(line)
    specs = list(req.specifier)
    assert len(specs) == 1 and specs[0].operator == "==", f"{path.name}: {line!r} is not pinned with =="
    name = canonicalize_name(req.name)
    assert name not in pins, f"{path.name}: {req.name} pinned twice"
    pins[name] = specs[0].version
  return pins


def test_requirements_pin_what_pyproject_asks_for():
  project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
  runtime = read_pins(REPO / "requirements.txt")
  dev = read_pins(REPO / "requirements-dev.txt")
  assert "-r requirements.txt" in (REPO / "requirements-dev.txt").read_text().splitlines()
  assert not runtime.keys() & dev.keys(), f"pinned in both files: {sorted(runtime.keys() & dev.keys())}"
  assert not any(n == "tensorflow" or n.startswith("tensorflow-cpu") or n.startswith("tf-")
                 for n in {**runtime, **dev}), "no TensorFlow"

  def check(requirements, pins, where):
    for text in requirements:
      req = Requirement(text)
      if req.name == project["name"]:  # dev = rnnlab[...]
        continue
      name = canonicalize_name(req.name)
      assert name in pins, f"{req.name} (pyproject: {text!r}) is not pinned in {where}"
      assert req.specifier.contains(Version(pins[name]), prereleases=True), (
          f"{where} pins {req.name}=={pins[name]}, outside pyproject's {text!r}")

  check(project["dependencies"], runtime, "requirements.txt")
  extras = project["optional-dependencies"]
  assert set(extras) >= {"torch", "test", "tensorboard", "wandb", "cluster", "dev"}
  everything = {**runtime, **dev}
  for extra, requirements in extras.items():
    check(requirements, everything, "requirements.txt + requirements-dev.txt")
