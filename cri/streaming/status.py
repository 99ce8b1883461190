"""The result of an exec or attach as the error stream carries it: a metav1 Status in JSON for
v4 and later protocols, its bare message before (nothing on success), as kubelet writes it."""

from __future__ import annotations

import json
from typing import Any

SUCCESS: dict[str, Any] = {"metadata": {}, "status": "Success"}


def exit_status(exit_code: int) -> dict[str, Any]:
    """Success, or the NonZeroExitCode failure client-go turns back into the exit code."""
    if exit_code == 0:
        return SUCCESS
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: exit status {exit_code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]},
    }


def error_status(message: str) -> dict[str, Any]:
    """A failure other than an exit code: kubelet sends those as an InternalError."""
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"Internal error occurred: {message}",
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    }


def encode(status: dict[str, Any], *, as_json: bool) -> bytes:
    if as_json:
        return json.dumps(status, separators=(",", ":")).encode()
    return b"" if status["status"] == "Success" else str(status["message"]).encode()
