"""The README's Python example runs and learns."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_example_trains():
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")], capture_output=True, text=True, check=True
    ).stdout
    lls = [float(v) for v in re.findall(r"exact test log-likelihood (-?[\d.]+) nats", out)]
    assert len(lls) == 5
    assert lls[-1] > lls[0]
    assert lls[-1] > -15.3  # true log-likelihood of this data is -14.61 nats
