"""ContainerConfig.stop_signal and ContainerStatus.stop_signal: the CRI's Signal enum against
the spelling images and the agent's state use ("SIGTERM", "SIGRTMIN+3").

Upstream renamed the enum values from SIGTERM to SIGNAL_SIGTERM (numbers unchanged). The
agent never stores the enum's spelling: it stores the image spelling, and reads the old enum
spelling of real-time signals (SIGRTMINPLUS3), which agents before the rename wrote to
state.db, as the same signal."""

from __future__ import annotations

import re
import signal

from cri.proto import api_pb2 as pb

_PREFIX = "SIGNAL_"
_RT_ENUM = re.compile(r"SIGRT(MIN|MAX)(PLUS|MINUS)(\d+)$")
_RT_IMAGE = re.compile(r"SIGRT(MIN|MAX)([+-])(\d+)$")
_RT_TO_ENUM = {"+": "PLUS", "-": "MINUS"}
_RT_TO_IMAGE = {"PLUS": "+", "MINUS": "-"}
# Once: the enum wrapper's keys() builds a list of every name on each call, which made it
# most of ContainerStatus's time.
_SIGNAL_NAMES = frozenset(pb.Signal.keys())


def stop_signal_from_proto(value: pb.Signal.ValueType) -> str:
    """The image spelling of a requested stop signal; empty for the runtime's default."""
    if value == pb.SIGNAL_RUNTIME_DEFAULT:
        return ""
    name = pb.Signal.Name(value).removeprefix(_PREFIX)
    rt = _RT_ENUM.match(name)
    if rt:
        return f"SIGRT{rt[1]}{_RT_TO_IMAGE[rt[2]]}{rt[3]}"
    return name


def stop_signal_to_proto(name: str) -> pb.Signal.ValueType:
    """The enum value for a stored or image stop signal (a name or a number); RUNTIME_DEFAULT
    when the CRI lists no such signal."""
    text = name.upper()
    if text.isdigit():
        try:
            text = signal.Signals(int(text)).name
        except ValueError:
            return pb.SIGNAL_RUNTIME_DEFAULT
    if text and not text.startswith("SIG"):
        text = "SIG" + text
    rt = _RT_IMAGE.match(text)
    if rt:
        text = f"SIGRT{rt[1]}{_RT_TO_ENUM[rt[2]]}{rt[3]}"
    key = _PREFIX + text
    if key in _SIGNAL_NAMES:
        return pb.Signal.Value(key)
    return pb.SIGNAL_RUNTIME_DEFAULT
