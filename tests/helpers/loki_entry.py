"""``loki`` as a script that also records how each rank exits (tests: "both ranks exit 0").

Lightning starts the extra ranks of ``loki fit`` (``trainer.devices: N``, no torchrun) by
re-running ``sys.argv``, so every rank runs this file, as every rank runs the ``loki`` console
script outside the tests. Each one writes ``$LOKI_EXIT_DIR/rank<LOCAL_RANK>.json`` on exit.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from loki.cli import main  # noqa: E402


def _record(code: int) -> None:
    folder = os.environ.get("LOKI_EXIT_DIR")
    if folder:
        rank = os.environ.get("LOCAL_RANK", "0")
        Path(folder, f"rank{rank}.json").write_text(json.dumps({"pid": os.getpid(),
                                                                "code": code}))


if __name__ == "__main__":
    try:
        main()
    except SystemExit as err:
        _record(0 if err.code is None else err.code if isinstance(err.code, int) else 1)
        raise
    except BaseException:
        _record(1)
        raise
    _record(0)
