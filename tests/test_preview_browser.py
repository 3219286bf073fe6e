"""The preview PNG, rendered by Debian's Chromium through Playwright."""

import shutil
import struct
from pathlib import Path

import pytest

from tests.project import make_project

pytestmark = pytest.mark.browser

needs_chromium = pytest.mark.skipif(
    not (Path("/usr/bin/chromium").exists() or shutil.which("chromium")),
    reason="Chromium is not installed (apt-get install chromium; .ci/run installs it)",
)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@needs_chromium
def test_preview_png_at_desktop_and_mobile_widths(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_project(tmp_path)
    result = run_cli(
        "campaigns",
        "preview",
        "campaigns/news.yaml",
        "--lang",
        "ko",
        "--png",
        "shots/news.png",
        env={"OUTREACH_POSTAL_ADDRESS": "Seoul"},
    )
    assert result.exit_code == 0, result.output
    desktop, mobile = tmp_path / "shots" / "news.png", tmp_path / "shots" / "news.mobile.png"
    assert png_size(desktop)[0] == 1200
    assert png_size(mobile)[0] == 390
    assert png_size(mobile)[1] > 200
