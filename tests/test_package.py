"""Issue 14.7: a wheel built from the repository carries the shipped definitions and the
calendar, so `civflow demo` works from any directory once installed.

Builds the wheel with pip (build isolation: setuptools and wheel come through pip's
configured index), installs it into a new virtualenv and runs `civflow demo` in an empty
directory. The dependencies are not downloaded again: the new environment sees this test
environment's site-packages through a .pth file, after its own (so `service` and
`workflows` are the wheel's). About 40 s on the 2-core development machine; marked
`wheel` (`pytest -m "not wheel"` leaves it out).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.wheel

SOURCES = ("setup.py", "setup.cfg", "pyproject.toml", "README.md", "MANIFEST.in")
PACKAGES = ("service", "workflows", "definitions")


def _run(*args, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          env=env)
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the sources (the build leaves nothing in the tree)."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        shutil.copy2(ROOT / name, src / name)
    for name in PACKAGES:
        shutil.copytree(ROOT / name, src / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, src, cwd=src)
    (built,) = out.glob("civflow-*.whl")
    return built


def test_the_wheel_carries_the_definitions_and_the_calendar(wheel):
    shipped = sorted(f.name for f in (ROOT / "definitions").iterdir()
                     if f.suffix in (".yaml", ".yml", ".json"))
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        carried = sorted(n.removeprefix("service/definitions/") for n in names
                         if n.startswith("service/definitions/"))
        assert carried == shipped and "calendar.yaml" in carried
        for name in shipped:  # the same bytes as the repository's files
            assert z.read(f"service/definitions/{name}") == (ROOT / "definitions" / name
                                                             ).read_bytes()
    assert "workflows/demo/people.csv" in names


def test_an_installed_wheel_runs_the_demo_from_any_directory(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                   cwd=tmp_path).strip()
    # The dependencies of this test environment, after the new environment's own packages.
    (Path(purelib) / "civflow-test-deps.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    # --ignore-installed: the civflow of the test environment (seen through the .pth) must
    # not stand in for the wheel, nor be uninstalled.
    _run(python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed",
         wheel, cwd=tmp_path)
    where = tmp_path / "elsewhere"
    where.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("CIVFLOW_DEFINITIONS", "CIVFLOW_DATABASE_URL", "PYTHONPATH")}
    located = _run(python, "-c", "import service.runtime as r; print(r.__file__); "
                   "print(r.shipped_definitions())", cwd=where, env=env).split()
    assert located[0].startswith(purelib) and located[1] == f"{purelib}/service/definitions"
    out = _run(env_dir / "bin" / "civflow", "demo", cwd=where, env=env)
    assert "no such folder" not in out
    for flow in ("annual-assessment", "contact-point-report", "frontline-dispatch",
                 "rank-promotion", "regular-assessment"):
        assert f"published: {flow} v1" in out
    assert "demo organisation created: 4 units, 30 people, 30 accounts" in out
    assert "demo history: " in out
    assert (where / "civflow.db").is_file()
    # --definitions and $CIVFLOW_DEFINITIONS still choose another folder.
    empty = tmp_path / "empty"
    empty.mkdir()
    out = _run(env_dir / "bin" / "civflow", "demo", "--db", f"sqlite:///{where / 'b.db'}",
               cwd=where, env=env | {"CIVFLOW_DEFINITIONS": str(empty)})
    assert "published:" not in out and "demo organisation created" in out
