"""A real Chromium plays a video through ``/stream`` while the extension downloads it.

The test extension's service worker (``extension/player.sw.js``) plays the engine: it
writes the first pieces of a VP9 WebM (made with ffmpeg here), opens a stream, and
answers STREAM_NEEDs by writing the pieces they cover with ``X-Expected-SHA1``. The
extension's player page (``extension/player.html``) plays the stream URL in a
``<video>``, then seeks past everything written so far.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from jst_tests.e2e.browser import extension_id
from jst_tests.e2e.test_browser import (  # noqa: F401 (fixtures)
    Browser,
    Setup,
    browser,
    playwright,
    setup,
)

FFMPEG = shutil.which("ffmpeg")
PIECE = 64 * 1024
FIRST_PIECES = 4  # about three seconds of the clip below
DURATION = 20
SEEK = 14.0  # well past the first pieces


def make_webm(path: Path) -> bytes:
    """20 s of VP9 at 320x240, a keyframe per second, the index (Cues) at the front."""
    assert FFMPEG is not None
    subprocess.run(
        [
            FFMPEG,
            *("-hide_banner", "-loglevel", "error", "-nostdin", "-y"),
            *("-f", "lavfi", "-i", f"testsrc2=duration={DURATION}:size=320x240:rate=25"),
            *("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"),
            *("-b:v", "800k", "-g", "25", "-cues_to_front", "1", "-reserve_index_space", "8192"),
            str(path),
        ],
        check=True,
        timeout=180,
    )
    return path.read_bytes()


def test_video_plays_and_seeks_past_the_written_part_while_pieces_arrive(
    browser: Browser,  # noqa: F811
    setup: Setup,  # noqa: F811
) -> None:
    if FFMPEG is None:
        reason = "ffmpeg is not installed (`make test` installs Debian's ffmpeg)"
        if os.environ.get("JST_E2E_REQUIRED") == "1":  # CI: the player test must run
            pytest.fail(reason)
        pytest.skip(reason)
    data = make_webm(setup.base / "clip.webm")
    pieces = -(-len(data) // PIECE)
    first_part = FIRST_PIECES * PIECE
    # The seek target lies in bytes the extension has not written when it seeks.
    assert len(data) * (SEEK / DURATION) * 0.8 > first_part

    browser.call("id => self.connect(id)", setup.install_id)
    assert browser.call("() => self.openIo()") is True
    url = browser.call(
        "([k, p, d, n, s]) => self.streamStart(k, p, d, n, s)",
        [setup.key, "Movies/clip.webm", base64.b64encode(data).decode(), FIRST_PIECES, PIECE],
    )
    assert url.startswith("http://127.0.0.1:")

    page = browser.context.new_page()
    page.goto(f"chrome-extension://{extension_id()}/player.html")
    page.evaluate("url => self.startPlayer(url)", url)
    page.wait_for_function("() => self.video.currentTime >= 1", timeout=60_000)
    # Only the first pieces are on disk (the engine has not answered any NEED yet): seek
    # past them, then let the engine answer.
    page.evaluate("t => self.seekTo(t)", SEEK)
    written_at_seek = browser.call("() => self.streamAnswer(true)")
    assert written_at_seek == list(range(FIRST_PIECES))

    page.wait_for_function(f"() => self.video.currentTime >= {SEEK + 2}", timeout=90_000)
    state = page.evaluate("() => self.playerState()")
    assert state["error"] is None, state
    status = browser.call("() => self.streamStatus()")
    assert status["errors"] == []
    assert status["needs"], "the daemon never asked the engine for a range"
    assert any(start >= first_part for start, _end in status["needs"])
    # Whatever was written is the file's own bytes, piece for piece.
    on_disk = (setup.root / "Movies" / "clip.webm").read_bytes()
    for index in status["written"]:
        assert (
            on_disk[index * PIECE : (index + 1) * PIECE]
            == data[index * PIECE : (index + 1) * PIECE]
        )
    assert len(status["written"]) <= pieces
    browser.call("() => self.streamClose()")
