"""Process start: the modules `cryptonorm train` needs on a local candle file import neither ccxt nor scipy
(scipy.signal and scipy.stats alone took seconds on a loaded 2-core machine); TA-Lib, the optional indicator
engine, only at the first indicator call."""

from __future__ import annotations

import subprocess
import sys


def test_train_path_imports_no_ccxt_scipy_or_talib() -> None:
    code = (
        "import sys\n"
        "import cryptonorm.cli.app, cryptonorm.cli.runs, cryptonorm.pipeline.training\n"
        "import cryptonorm.features.dataset, cryptonorm.features.splits, cryptonorm.features.indicators\n"
        "import cryptonorm.evaluate.forecast, cryptonorm.trade.backtest, cryptonorm.data.store\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ccxt', 'scipy', 'talib')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip() == "[]", out.stdout
