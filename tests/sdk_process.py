"""An app using the SDK, run as its own process by the SDK outage test.

``track ENDPOINT OUTBOX COUNT IDS_FILE``: track COUNT events, write their ids, then
keep running (the background flusher keeps trying) until killed.
``drain ENDPOINT OUTBOX``: a restarted app: close() flushes what the last one left.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from learnstream_sdk import Tracker


def main() -> int:
    mode, endpoint, outbox = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    tracker = Tracker(endpoint, outbox, flush_interval_s=1.0, flush_at=100, backoff_base_s=0.2)
    if mode == "track":
        count, ids_file = int(sys.argv[4]), Path(sys.argv[5])
        ids = [
            tracker.track(
                "question_submit",
                {"question_id": f"q{i}", "topic_id": "fractions", "is_correct": i % 2 == 0},
                user_id=f"learner-{i % 7}",
            )
            for i in range(count)
        ]
        ids_file.write_text(json.dumps(ids))
        while True:
            time.sleep(1)
    result = tracker.close()
    print(json.dumps(result.__dict__), flush=True)
    return 0 if result.pending == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
