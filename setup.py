"""Build hook (everything else is in pyproject.toml): the example configs and claim files ship in the wheel.

configs/ stays the one home of the examples in the repository; building copies it into the package as
cryptonorm/resources/configs/, where `cryptonorm init DIR` finds it after a pip install
(cryptonorm/pipeline/examples.py). MANIFEST.in puts configs/ into the sdist, so a wheel built from the sdist
has them too.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

EXAMPLES = Path(__file__).resolve().parent / "configs"


class BuildPyWithExamples(build_py):
    def run(self) -> None:
        super().run()
        if not EXAMPLES.is_dir():
            raise SystemExit(f"{EXAMPLES} is missing: the example configs must be in the source tree (MANIFEST.in)")
        target = Path(self.build_lib) / "cryptonorm" / "resources" / "configs"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(EXAMPLES, target, ignore=shutil.ignore_patterns(".*", "__pycache__"))


setup(cmdclass={"build_py": BuildPyWithExamples})
