"""Run a throwaway local registry in the foreground, optionally holding the test images.

Prints its address (and Basic-auth credentials with --auth) and PIDs, then serves until
SIGINT or SIGTERM; the registry is stopped by PID and its storage removed on the way out.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from pathlib import Path

from tests.images_build import build_all
from tests.registry_fixture import LocalRegistry, push_test_images, start_registry


def _load_images(registry: LocalRegistry, large_mb: int) -> None:
    with tempfile.TemporaryDirectory(prefix="moorage-images-") as out_dir:
        images = build_all(Path(out_dir), large_bytes=large_mb * 1024 * 1024)
        push_test_images(registry, images)
        print("images:", ", ".join(sorted(images)), "(+ alias:v1) under moorage-test/")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--auth", action="store_true", help="require Basic auth")
    parser.add_argument("--images", action="store_true", help="push every test image")
    parser.add_argument("--large-mb", type=int, default=20, help="random bytes in `large`")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so either way the finally below stops the registry.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    registry = start_registry(auth=args.auth)
    try:
        if args.images:
            _load_images(registry, args.large_mb)
        print(f"address: {registry.address}")
        if registry.username:
            print(f"credentials: {registry.username}:{registry.password}")
        print(f"registry pid {registry.process.pid}; stop with Ctrl-C or kill {os.getpid()}")
        sys.stdout.flush()
        registry.process.wait()
        sys.exit(f"docker-registry exited {registry.process.returncode}")
    except KeyboardInterrupt:
        pass
    finally:
        registry.stop()


if __name__ == "__main__":
    main()
