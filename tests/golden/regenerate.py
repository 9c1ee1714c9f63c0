"""Regenerate a golden from the CURRENT code, after an intentional change of results.

    python tests/golden/regenerate.py pose "why the numbers changed"

Writes tests/golden/<study>.json in the canonical form of ``canonical.py`` with this machine's
fingerprint, the commit it was made at and the reason. The first goldens pinned the behaviour of
commit d38af37 before the study-layer redesign (``make_goldens_v0.py``, old API); the redesign
reproduced them exactly. Later intentional changes (listed in each file's "history") regenerate
them here, so that refactors after them are held to the new numbers.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_goldens_v0 import fingerprint  # noqa: E402

if __name__ == "__main__":
    study, reason = sys.argv[1], sys.argv[2]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=HERE).stdout.strip()  # fmt: skip
    path = HERE / f"{study}.json"
    history = json.loads(path.read_text()).get("history", []) if path.exists() else []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        subprocess.run([sys.executable, str(HERE / "canonical.py"), study, str(out), tmp],
                       check=True)  # fmt: skip
        golden = json.loads(out.read_text())
    doc = {"fingerprint": fingerprint(), "commit": commit, "golden": golden,
           "history": [*history, {"commit": commit, "reason": reason}]}  # fmt: skip
    path.write_text(json.dumps(doc, indent=1, sort_keys=True))
    print("wrote", path)
