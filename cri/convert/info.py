"""The `info` map of a verbose status answer: the runtime's details as one JSON string,
under the key crictl reads."""

from __future__ import annotations

import json
from collections.abc import Mapping


def verbose_info(details: Mapping[str, object], *, sort_keys: bool = True) -> dict[str, str]:
    return {"info": json.dumps(details, sort_keys=sort_keys)}
