"""``python -m bench.parse_once FILE``: parse one state file as the watcher does, and print what it cost.

It imports only the parser (msgspec), not the daemon, so that the process's peak RSS is the parse's own:
the interpreter, the mapped file and the decoded queue. It maps the file as ``read_local_state`` does
(watcher/remote/poll.py), decodes it, unmaps it, then builds the snapshot, as the poller does.
"""

from __future__ import annotations

import json
import mmap
import os
import resource
import sys
import time

from watcher.pueue.parse import decode_status, snapshot_of


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(path: str) -> None:
    before = rss()
    started = time.perf_counter()
    with open(path, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    view = memoryview(mapped)
    decoded = decode_status(view)
    view.release()
    mapped.close()
    snapshot = snapshot_of(decoded)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    report = {"parse_seconds": seconds, "tasks": len(snapshot.tasks), "groups": len(snapshot.groups),
              "rss_before_bytes": before, "peak_rss_bytes": peak, "rss_after_bytes": rss()}  # fmt: skip
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
    sys.stdout.flush()
    os._exit(0)  # as the CLI's one-shot commands do (watcher/cli.py entry): no teardown of 53,000 objects
