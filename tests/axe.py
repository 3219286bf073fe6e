"""axe-core for the browser tests: one pinned release, fetched by `.ci/run` (never at test
time) into tests/.axe/ (git-ignored), its tarball checked against the registry's sha512.

    python -m tests.axe     # fetch it (what .ci/run does)
"""

from __future__ import annotations

import base64
import hashlib
import io
import sys
import tarfile
import urllib.request
from pathlib import Path

VERSION = "4.10.2"
TARBALL = f"https://registry.npmjs.org/axe-core/-/axe-core-{VERSION}.tgz"
# The npm registry's `dist.integrity` of that tarball.
INTEGRITY = "sha512-RE3mdQ7P3FRSe7eqCWoeQ/Z9QXrtniSjp1wUjt5nRC3WIpz5rSCve6o3fsZ2aCpJtrZjSZgjwXAoTO5k4tEI0w=="
SCRIPT = Path(__file__).resolve().parent / ".axe" / "axe.min.js"
MISSING = "axe-core is not fetched (python -m tests.axe; .ci/run fetches it)"


def fetch(target: Path = SCRIPT) -> Path:
    with urllib.request.urlopen(TARBALL, timeout=60) as response:
        data = response.read()
    digest = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != INTEGRITY:
        raise SystemExit(f"axe-core {VERSION}: the tarball's sha512 is not the pinned one")
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        member = archive.extractfile("package/axe.min.js")
        assert member is not None
        script = member.read()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(script)
    return target


if __name__ == "__main__":
    print(f"axe-core {VERSION}: {fetch()}", file=sys.stderr)
