"""The README's usage example runs as written, and what it claims about its output holds."""

import contextlib
import io
import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def usage_example() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- usage-example[^>]*-->\s*```python\n(.*?)```", text, re.DOTALL)
    assert match, "README.md lost its marked usage example"
    return match.group(1)


def test_readme_usage_example_runs_and_agrees_with_monte_carlo():
    code = usage_example()
    assert len(code.strip().splitlines()) <= 14
    namespace: dict = {}
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        exec(compile(code, str(README), "exec"), namespace)
    assert printed.getvalue().strip()
    score = np.asarray(namespace["score"])
    mc = namespace["mc"]
    assert score.shape == (5,)
    z = (np.asarray(mc.estimate) - score) / np.asarray(mc.stderr)
    assert np.max(np.abs(z)) < 4.0, z
