"""mkdocs hook: the study's own reports, as `cryptonorm study` wrote them, inside the site.

docs/results/claims_*/verdicts.md (and the sweep summaries beside them) are copied unchanged from a study
directory; they link the plots of each claim's sweep directory, which are not copied into docs/ (too large).
Those links would break the strict build, so in pages under results/ a link to a file that is not in docs/
becomes its plain text with a note. Every hand-written page is checked strictly as written.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s#]+)\)")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    src = Path(page.file.src_uri)
    if src.parts[:1] != ("results",) or src.name not in _STUDY_OUTPUTS and not src.name.endswith("_summary.md"):
        return markdown
    docs = Path(config["docs_dir"])

    def fix(m: re.Match[str]) -> str:
        target = m.group(3)
        if "://" in target or (docs / src.parent / target).exists():
            return m.group(0)
        return f"{m.group(2) or target} (`{target}`: in the study directory, not copied here)"

    return _LINK.sub(fix, markdown)


_STUDY_OUTPUTS = {"verdicts.md"}
