"""`moorage` with every call into the project's packages recorded, for hack/trace_paths.py.

Each call event is (caller file, callee file, callee function), in order, across threads;
SIGUSR1 writes what was recorded since the last signal to $MOORAGE_TRACE_FILE and starts
afresh. Only a measuring tool: it slows the agent down several times.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from cri.cli import main as moorage

REPO = Path(__file__).resolve().parent.parent
_PACKAGES = tuple(f"{REPO}/{name}/" for name in ("cri", "runtime", "network", "metrics"))
_NETLINK = "/pyroute2/"
_events: list[tuple[str, str, str]] = []


def _relative(filename: str) -> str | None:
    if filename.startswith(_PACKAGES):
        return filename[len(str(REPO)) + 1 :]
    return None


def _profile(frame: FrameType, event: str, arg: Any) -> None:
    if event != "call":
        return
    callee = frame.f_code.co_filename
    name = _relative(callee)
    if name is None:
        if _NETLINK in callee:
            _events.append(("", "<netlink>", frame.f_code.co_name))
        return
    caller = frame.f_back
    caller_name = _relative(caller.f_code.co_filename) if caller is not None else None
    _events.append((caller_name or "", name, frame.f_code.co_name))


def _dump(signum: int, frame: FrameType | None) -> None:
    global _events
    recorded, _events = _events, []
    target = Path(os.environ["MOORAGE_TRACE_FILE"])
    partial = target.with_suffix(".partial")
    partial.write_text(json.dumps(recorded))
    partial.rename(target)


def main() -> int:
    signal.signal(signal.SIGUSR1, _dump)
    threading.setprofile(_profile)
    sys.setprofile(_profile)
    return moorage(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
