"""`neuroflow-recover` whose ingest waits inside each log's transaction (the kill -9 and the
contention tests).

    python tests/paused_ingest.py FLAG_FILE [neuroflow-recover arguments]

After ingesting a log, before its transaction commits, it writes FLAG_FILE and waits (up to
10 minutes) until the file named by env PAUSE_RELEASE exists (when set), so a test can kill
the process in the middle of a transaction, or make other writers wait for its lock.
"""

import os
import sys
import time
from pathlib import Path

from neuroflow_recover.queue import ingest

FLAG = Path(sys.argv.pop(1))
RELEASE = os.environ.get("PAUSE_RELEASE")
_ingest_log = ingest.ingest_log


def _paused(*args, **kwargs):
    result = _ingest_log(*args, **kwargs)
    if result.status == "ingested" and not FLAG.exists():
        FLAG.write_text(f"{result.run_id}\n")
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not (RELEASE and Path(RELEASE).exists()):
            time.sleep(0.05)
    return result


ingest.ingest_log = _paused

from neuroflow_recover.cli import main  # noqa: E402

main()
