"""`init`: a new project folder with the example configs and claim files, for a pip-installed cryptonorm."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cryptonorm.cli.app import app, errors, say


@app.command("init")
def init(
    dest: Annotated[Path, typer.Argument(help="The project folder to create (or an empty one).", show_default=False)],
    force: Annotated[bool, typer.Option("--force", help="Add the examples to a folder that is not empty; files "
                                                        "already there are kept, never replaced.")] = False,
) -> None:
    """Start a project: copy the example configs and claim files into DEST/configs/."""
    from cryptonorm.pipeline.examples import init_project

    with errors():
        result = init_project(dest, force=force)
    if result.kept:
        names = ", ".join(str(rel) for rel in result.kept[:5]) + (", ..." if len(result.kept) > 5 else "")
        typer.echo(f"kept {len(result.kept)} file(s) already in {dest} (not replaced): {names}", err=True)
    say(f"{len(result.copied)} example file(s) written to {dest / 'configs'}; next: cd {dest} && "
        "cryptonorm run configs/quickstart.yaml")
