"""What every group of RPC handlers holds."""

from __future__ import annotations

from cri.config import Config
from runtime.agent import Runtime


class Handlers:
    def __init__(self, runtime: Runtime, config: Config) -> None:
        self.runtime = runtime
        self.config = config
