"""Build the image-pull tests' OCI layouts into a directory; see tests/images_build.py.

Usage: python3 hack/test_images.py OUT_DIR [--large-mb N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Run as a plain script: the builder lives with the tests, which import it as tests.images_build.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.images_build import build_all


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--large-mb", type=int, default=100, help="random bytes in `large`")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, layout in build_all(args.out_dir, large_bytes=args.large_mb * 1024 * 1024).items():
        print(f"{name}\t{layout}")


if __name__ == "__main__":
    main()
