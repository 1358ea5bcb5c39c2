"""The description of each config field, as written beside it in the source: the `# comment` style of
cryptonorm/config/*.py (and of the sweep and claim file schemas), read without importing anything new.

docs/gen_ref.py puts these in the generated configuration reference; a `Field(description=...)` takes
precedence there. The source is parsed with `ast` and `tokenize`, never executed.
"""

from __future__ import annotations

import ast
import inspect
import io
import tokenize
from functools import cache
from pathlib import Path


def _comments(source: str) -> dict[int, tuple[str, bool]]:
    """Line number -> (comment text, whether the line holds only the comment)."""
    out: dict[int, tuple[str, bool]] = {}
    lines = source.splitlines()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            row, col = tok.start
            out[row] = (tok.string.lstrip("#").strip(), not lines[row - 1][:col].strip())
    return out


@cache
def field_comments(cls: type) -> dict[str, str]:
    """The comment of each annotated field in `cls`'s class body (its source file parsed, not imported).

    The rule (the style of cryptonorm/config/*.py):
    - a trailing comment on the field's own line(s) belongs to it;
    - a block of comment-only lines directly above a field (no blank line between) belongs to that field when
      the field has no trailing comment of its own;
    - otherwise (the next field has its own trailing comment, or a blank line or a method follows) such lines
      continue the trailing comment of the field above them.
    """
    file = inspect.getsourcefile(cls)
    if file is None:
        return {}
    source = Path(file).read_text()
    comments = _comments(source)
    lines = source.splitlines()
    node = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef) and n.name == cls.__name__)
    fields = [s for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]
    texts: dict[str, list[str]] = {}
    trailing: dict[str, bool] = {}
    for stmt in fields:
        assert isinstance(stmt.target, ast.Name)
        end = stmt.end_lineno or stmt.lineno
        own = [comments[r][0] for r in range(stmt.lineno, end + 1) if r in comments and not comments[r][1]]
        texts[stmt.target.id], trailing[stmt.target.id] = own, bool(own)
    for i, stmt in enumerate(fields):
        assert isinstance(stmt.target, ast.Name)
        block: list[str] = []  # comment-only lines directly above, nearest last
        row = stmt.lineno - 1
        while row in comments and comments[row][1]:
            block.insert(0, comments[row][0])
            row -= 1
        prev = fields[i - 1] if i else None
        prev_name = prev.target.id if prev is not None and isinstance(prev.target, ast.Name) else None
        touches_prev = prev is not None and row == (prev.end_lineno or prev.lineno)
        if block and trailing[stmt.target.id] and touches_prev and prev_name and trailing[prev_name]:
            texts[prev_name] += block  # continuation of the field above
        elif block:
            texts[stmt.target.id] = block + texts[stmt.target.id]
    # comment lines after the last field continue it (until a blank line or another statement)
    if fields:
        last = fields[-1]
        assert isinstance(last.target, ast.Name)
        row = (last.end_lineno or last.lineno) + 1
        while trailing[last.target.id] and row in comments and comments[row][1] and lines[row - 1].strip():
            texts[last.target.id].append(comments[row][0])
            row += 1
    return {name: " ".join(parts) for name, parts in texts.items()}
