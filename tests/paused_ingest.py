"""`neuroflow-recover` whose ingest waits inside each log's transaction (the kill -9 test).

    python tests/paused_ingest.py FLAG_FILE [neuroflow-recover arguments]

After ingesting a log, before its transaction commits, it writes FLAG_FILE and sleeps
(up to 10 minutes), so a test can kill the process in the middle of a transaction.
"""

import sys
import time
from pathlib import Path

from neuroflow_recover.queue import ingest

FLAG = Path(sys.argv.pop(1))
_ingest_log = ingest.ingest_log


def _paused(*args, **kwargs):
    result = _ingest_log(*args, **kwargs)
    if result.status == "ingested":
        FLAG.write_text(f"{result.run_id}\n")
        time.sleep(600)
    return result


ingest.ingest_log = _paused

from neuroflow_recover.cli import main  # noqa: E402

main()
