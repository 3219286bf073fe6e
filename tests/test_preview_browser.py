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


@needs_chromium
def test_preview_png_without_playwright_is_one_line(
    run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """`pip install -e .` alone has no Playwright: say how to get it, no traceback."""
    import sys

    make_project(tmp_path)
    monkeypatch.setitem(sys.modules, "playwright.sync_api", None)  # as if not installed
    result = run_cli(
        "campaigns",
        "preview",
        "campaigns/news.yaml",
        "--png",
        "shots/news.png",
        env={"OUTREACH_POSTAL_ADDRESS": "Seoul"},
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert lines == [
        "error: --png needs Playwright (it drives the machine's Chromium): "
        "pip install 'outreach[preview]'"
    ]
    assert (tmp_path / "preview" / "news.en.html").exists()  # the HTML was still written
