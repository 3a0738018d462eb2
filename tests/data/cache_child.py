"""A second process using the decode cache, for the tests of two writers at once and of a killed writer.

``python -m tests.data.cache_child ROOT CACHE_DIR [--go FILE] [--delay S] [--size N]`` waits for FILE (so two
children start together), loads ROOT through the cache with each decode slowed by S seconds, and prints one
JSON line: the cache's state, how many files it decoded, and the sum of the pixels it got.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from tumorcls.data import cache
from tumorcls.data.decode import DecodeOptions, SourceImage
from tumorcls.data.disk_cache import DecodeCache
from tumorcls.data.scan import scan_dataset


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("cache_dir", type=Path)
    parser.add_argument("--go", type=Path)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()
    decoded: list[str] = []
    original = cache.load_image

    def slow_load(data: bytes, options: DecodeOptions, name: str = "") -> SourceImage:
        decoded.append(str(name))
        time.sleep(args.delay)
        return original(data, options, name)

    cache.load_image = slow_load
    while args.go is not None and not args.go.exists():
        time.sleep(0.01)
    scan = scan_dataset(args.root)
    result = DecodeCache(args.cache_dir, 10**9).load(scan.root, scan.records, DecodeOptions(size=args.size))
    total = int(np.asarray(result.decoded.images, dtype=np.int64).sum()) if result else None
    print(json.dumps({"state": result.state if result else None, "decoded": len(decoded), "sum": total}))


if __name__ == "__main__":
    main()
