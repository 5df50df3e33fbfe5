"""Strips debug symbols from the extension modules inside wheels, in place.

Why: PyPI's manylinux wheels often ship their C extensions unstripped; uvloop's loop module is
13.6 MB with debug info and 1.6 MB without, more than a tenth of the queue-proxy image. The
image build has no binutils (and no network to get them), so the wheels are stripped on the
host once, when images/build.sh downloads them. ``strip --strip-unneeded`` keeps the dynamic
symbol table, so the modules load and run the same; only debuggers lose line information.
Each changed file's hash and size are rewritten in the wheel's RECORD, so the wheel stays
consistent for any installer that checks it.

Usage: python images/strip_wheels.py WHEEL...   (prints bytes saved per wheel; no-op without
a ``strip`` binary)
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def _strip(data: bytes, strip: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "module.so"
        path.write_bytes(data)
        subprocess.run([strip, "--strip-unneeded", str(path)], check=True, timeout=120)
        return path.read_bytes()


def strip_wheel(wheel: Path, strip: str) -> int:
    """Rewrites ``wheel`` with stripped ``.so`` files; bytes saved (0: left untouched)."""
    with zipfile.ZipFile(wheel) as zf:
        infos = zf.infolist()
        contents = {info.filename: zf.read(info) for info in infos}
    changed: dict[str, bytes] = {}
    for name, data in contents.items():
        if name.endswith(".so") or ".so." in name.rsplit("/", 1)[-1]:
            stripped = _strip(data, strip)
            if len(stripped) < len(data):
                changed[name] = stripped
    if not changed:
        return 0
    saved = sum(len(contents[n]) - len(d) for n, d in changed.items())
    contents.update(changed)
    record_name = next(n for n in contents if n.endswith(".dist-info/RECORD"))
    lines = []
    for line in contents[record_name].decode().splitlines():
        path = line.split(",", 1)[0]
        if path in changed:
            line = f"{path},{_record_hash(changed[path])},{len(changed[path])}"
        lines.append(line)
    contents[record_name] = ("\n".join(lines) + "\n").encode()
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
        for info in infos:
            out.writestr(info, contents[info.filename])
    tmp.replace(wheel)
    return saved


def main(argv: list[str]) -> int:
    strip = shutil.which("strip")
    if strip is None:
        print("strip_wheels.py: no strip binary (binutils); wheels left as they are")
        return 0
    for arg in argv:
        saved = strip_wheel(Path(arg), strip)
        if saved:
            print(f"strip_wheels.py: {Path(arg).name}: {saved / 1e6:.1f} MB of debug symbols")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
