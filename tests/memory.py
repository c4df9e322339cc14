"""Memory figures of the test process itself, for tests that check what a run leaves resident."""

import os


def rss_bytes() -> int:
    """Current resident size (ru_maxrss is a process-lifetime peak that earlier tests, models, raise)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
