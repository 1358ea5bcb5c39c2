"""The example configs and claim files that ship with cryptonorm, and copying them into a new project folder.

In a wheel they are package data (`cryptonorm/resources/configs/`, put there by setup.py at build time); in a
source checkout they are the repository's `configs/`, their one home. `cryptonorm init DIR` copies them to
`DIR/configs/`, so the paths in the docs (`cryptonorm run configs/quickstart.yaml`) work from DIR.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptonorm.atomic import FILE_MODE
from cryptonorm.errors import DataError, PathError, UsageError

EXAMPLES = "configs"  # the folder's name: in the checkout, inside the package, and in the user's project
_PACKAGE = Path(__file__).resolve().parents[1]  # cryptonorm/


def examples_root() -> Path:
    """The folder of example configs: the installed package data, else the source checkout's configs/."""
    packaged = _PACKAGE / "resources" / EXAMPLES
    if packaged.is_dir():
        return packaged
    checkout = _PACKAGE.parent / EXAMPLES
    if checkout.is_dir() and (_PACKAGE.parent / "pyproject.toml").is_file():
        return checkout
    raise DataError(f"the example configs are not installed with this copy of cryptonorm (no {packaged}); "
                    "reinstall it from a wheel (pip install cryptonorm) or run it from a source checkout")


def example_files(root: Path | None = None) -> list[Path]:
    """Every example file, relative to the examples folder, sorted (hidden files and caches left out)."""
    root = examples_root() if root is None else root
    return sorted(p.relative_to(root) for p in root.rglob("*")
                  if p.is_file() and not any(part.startswith(".") or part == "__pycache__"
                                             for part in p.relative_to(root).parts))


@dataclass(frozen=True)
class InitResult:
    """What `init_project` did: files copied and files already there (kept as they were), relative to dest."""

    dest: Path
    copied: list[Path]
    kept: list[Path]


def init_project(dest: Path, force: bool = False) -> InitResult:
    """Copy the example configs and claim files into `dest/configs/`.

    A folder that is not empty is refused unless `force`; even then no file already there is replaced (it is
    listed in `kept`). Each file is written to a temp file and linked into place, so an interrupted copy
    leaves whole files only, and a file that appears meanwhile is not overwritten either.
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise PathError(f"{dest}: it is a file, not a folder; choose a new folder for the project")
    if dest.is_dir() and any(dest.iterdir()) and not force:
        raise UsageError(f"{dest} is not empty; choose a new or empty folder, or add --force to add the examples "
                         "beside what is there (no file of yours is replaced)")
    root = examples_root()
    copied: list[Path] = []
    kept: list[Path] = []
    for rel in example_files(root):
        target = dest / EXAMPLES / rel
        if target.exists() or target.is_symlink():
            kept.append(Path(EXAMPLES) / rel)
            continue
        if _copy_new(root / rel, target):
            copied.append(Path(EXAMPLES) / rel)
        else:
            kept.append(Path(EXAMPLES) / rel)
    return InitResult(dest, copied, kept)


def _copy_new(src: Path, target: Path) -> bool:
    """Copy src to target only if target does not exist; False if it does. Whole files only."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, FILE_MODE)  # mkstemp makes 0600; a copied config is an ordinary file
        try:
            os.link(tmp, target)  # fails if target exists: never replaces a file
        except FileExistsError:
            return False
        except OSError as e:  # a file system without hard links: check, then rename
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            if target.exists():
                return False
            os.replace(tmp, target)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()

