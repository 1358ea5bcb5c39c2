"""A real headless Chromium (the distribution's package) driven by Selenium, for the HTML report tests.

`open_report` loads a page from file:// and returns what the browser saw: console errors (the browser log
at level SEVERE: uncaught exceptions, failed loads), every request the page made (Chrome DevTools
performance log, Network.requestWillBeSent, cross-checked with the page's own PerformanceObserver
resource entries), and per chart its rendered SVG and trace count.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INSTALL = "apt-get install -y chromium chromium-driver (Debian; `.ci/run` does it in CI) and pip install selenium"
# not network: local files and the browser's own pages (its start page loads chrome:// resources itself)
LOCAL_SCHEMES = ("file:", "data:", "about:", "blob:", "chrome:", "chrome-error:", "chrome-untrusted:", "devtools:")


def find_chromium() -> tuple[str, str] | None:
    """(browser binary, chromedriver) of a system Chromium, or None."""
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    candidates = [os.environ.get("CHROMIUM", ""), "/usr/lib/chromium/chromium",  # Debian: the real binary
                  shutil.which("chromium") or "", shutil.which("chromium-browser") or "",
                  shutil.which("google-chrome") or ""]
    binary = next((c for c in candidates if c and os.access(c, os.X_OK)), None)
    if not driver or not os.access(driver, os.X_OK) or not binary:
        return None
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None
    return binary, driver


@dataclass
class Seen:
    """What the browser saw of one page."""

    errors: list[str] = field(default_factory=list)  # console errors
    requests: list[str] = field(default_factory=list)  # every URL requested that is not local
    charts: list[dict[str, Any]] = field(default_factory=list)  # id, traces (data), svg, drawn (g.trace)
    notices: list[str] = field(default_factory=list)  # the page's visible notices
    seconds: float = 0.0  # from navigation start to every chart drawn


class Browser:
    """One headless Chromium for a test session (started once: ~1 s)."""

    def __init__(self, binary: str, driver_path: str) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not download anything
        self.profile = tempfile.mkdtemp(prefix="cryptonorm-chromium-")
        opts = webdriver.ChromeOptions()
        opts.binary_location = binary
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--no-first-run", "--disable-extensions", "--window-size=1600,1200",
                    f"--user-data-dir={self.profile}"):
            opts.add_argument(arg)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        self.driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    def open_report(self, path: Path, timeout: float = 20.0) -> Seen:
        """Load `path` from file://, wait until every chart is drawn (or time out), collect what was seen."""
        from selenium.webdriver.support.ui import WebDriverWait

        d = self.driver
        d.get_log("browser")  # drop what earlier pages logged
        d.get_log("performance")
        d.get(Path(path).resolve().as_uri())
        WebDriverWait(d, timeout).until(lambda drv: drv.execute_script(_ALL_DRAWN))
        seen = Seen()
        seen.seconds = float(d.execute_script("return (window.reportDrawnMs || performance.now()) / 1000"))
        time.sleep(0.2)  # late errors (a failed resource) reach the log
        seen.errors = [e["message"] for e in d.get_log("browser") if e.get("level") == "SEVERE"]
        for entry in d.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg.get("method") == "Network.requestWillBeSent":
                url = msg["params"]["request"]["url"]
                if not url.startswith(LOCAL_SCHEMES):
                    seen.requests.append(url)
        seen.requests += [u for u in d.execute_script(_RESOURCES) if not u.startswith(LOCAL_SCHEMES)]
        seen.charts = d.execute_script(_CHARTS)
        seen.notices = d.execute_script("return [...document.querySelectorAll('.notice')].map(e => e.innerText)")
        return seen


_ALL_DRAWN = """
const charts = [...document.querySelectorAll('.chart')];
return document.readyState === 'complete' && (charts.length === 0 || window.reportDrawnMs !== undefined)
  && charts.every(c => c.querySelector('svg.main-svg') && c._fullData);
"""
_RESOURCES = "return performance.getEntriesByType('resource').map(e => e.name)"
_CHARTS = """
return [...document.querySelectorAll('.chart')].map(c => ({
  id: c.id, traces: c.data ? c.data.length : -1, expected: Number(c.dataset.traces),
  svg: c.querySelectorAll('svg.main-svg').length, drawn: c.querySelectorAll('g.trace').length,
  points: c._fullData.map(t => (t.y ? t.y.length : 0)),
  last: c._fullData.map(t => (t.y && t.y.length ? Number(t.y[t.y.length - 1]) : null)),
  names: c._fullData.map(t => t.name),
}));
"""
