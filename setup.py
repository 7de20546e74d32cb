"""Packaging beyond setup.cfg: wheels carry the shipped flow definitions.

The repository keeps the flows and the working-day calendar in `definitions/` at the top;
a wheel copies them into `service/definitions/`, where `service.runtime.shipped_definitions`
finds them once installed, so `civflow demo` and `civflow serve` work from any directory.
A checkout or an editable install reads `definitions/` itself (no copy is made).
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SUFFIXES = (".yaml", ".yml", ".json")


class BuildWithDefinitions(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the repository's definitions/ directly
        target = Path(self.build_lib) / "service" / "definitions"
        target.mkdir(parents=True, exist_ok=True)
        for f in sorted((HERE / "definitions").iterdir()):
            if f.suffix in SUFFIXES:
                self.copy_file(str(f), str(target / f.name))


setup(cmdclass={"build_py": BuildWithDefinitions})
