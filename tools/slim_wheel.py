"""Rewrite a wheel without the shared libraries a machine will never load, so that it fits what travels to it.

    python tools/slim_wheel.py .whl/bitsandbytes-0.50.2-*.whl --keep 'libbitsandbytes_(cpu|cuda13\\d*)\\.so'

Every `.so` file in the wheel whose name does not match --keep (a regular expression, matched in full against the
file's name) is dropped, and so is its line in the wheel's RECORD; everything else is copied as it was. The wheel
is rewritten in place, under the same name. It prints what it dropped and the sizes before and after.
"""

from __future__ import annotations

import argparse
import re
import sys
import zipfile
from pathlib import Path


def slim(wheel: Path, keep: str) -> list[str]:
    """Drop from `wheel` the shared libraries whose file names do not fully match `keep`; the names dropped."""
    pattern = re.compile(keep)
    with zipfile.ZipFile(wheel) as source:
        names = source.namelist()
        dropped = [n for n in names if n.endswith(".so") and not pattern.fullmatch(n.rsplit("/", 1)[-1])]
        if not dropped:
            return []
        if not any(n.endswith(".so") and n not in dropped for n in names):
            raise ValueError(f"--keep {keep!r} matches none of {wheel.name}'s shared libraries")
        slimmed = wheel.with_suffix(".slim")
        with zipfile.ZipFile(slimmed, "w", zipfile.ZIP_DEFLATED) as target:
            for info in source.infolist():
                if info.filename in dropped:
                    continue
                data = source.read(info)
                if info.filename.endswith(".dist-info/RECORD"):
                    lines = data.decode().splitlines(keepends=True)
                    data = "".join(line for line in lines if line.split(",", 1)[0] not in dropped).encode()
                target.writestr(info, data, zipfile.ZIP_DEFLATED)
    slimmed.replace(wheel)
    return dropped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", type=Path)
    parser.add_argument("--keep", required=True, help="the shared libraries to keep: a regular expression, "
                                                      "matched in full against each .so file's name")
    args = parser.parse_args(argv)
    if not zipfile.is_zipfile(args.wheel):
        print(f"error: {args.wheel} is not a wheel (not a zip archive)", file=sys.stderr)
        return 2
    before = args.wheel.stat().st_size
    try:
        dropped = slim(args.wheel, args.keep)
    except (ValueError, re.error) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.wheel.name}: dropped {len(dropped)} shared libraries "
          f"({before / 2**20:.1f} MiB -> {args.wheel.stat().st_size / 2**20:.1f} MiB)")
    for name in dropped:
        print(f"  dropped {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
