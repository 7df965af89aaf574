"""A real player (Debian's ffmpeg/ffprobe) reads a file through ``/stream`` while the test
plays the engine: only the head of the file is on disk, ``ffmpeg -ss`` seeks past it, and
every STREAM_NEED is answered the way a torrent engine would, one verified piece at a
time. The decoded frames must equal those decoded from the complete file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import trio

from jst_tests.daemonproc import RunningDaemon
from jst_tests.httpclient import HttpClient
from jst_tests.ioclient import IoClient, io_session
from jst_tests.streamclient import expect_need, open_stream, write_piece

FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")


@pytest.fixture(autouse=True)
def need_ffmpeg() -> None:
    if FFMPEG is None or FFPROBE is None:
        reason = "ffmpeg/ffprobe not installed (`make test` installs Debian's ffmpeg)"
        if os.environ.get("JST_E2E_REQUIRED") == "1":  # CI: real players must run
            pytest.fail(reason)
        pytest.skip(reason)


PIECE = 256 * 1024
HEAD_ON_DISK = 4 * PIECE  # the moov atom (faststart) and the first second or so
SEEK_SECONDS = 12


def make_mp4(path: Path) -> None:
    """20 s of H.264, 640x360, one keyframe per second, index at the front."""
    assert FFMPEG is not None
    subprocess.run(
        [
            FFMPEG,
            *("-hide_banner", "-loglevel", "error", "-nostdin", "-y"),
            *("-f", "lavfi", "-i", "testsrc2=duration=20:size=640x360:rate=25"),
            *("-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-b:v", "3M"),
            *("-pix_fmt", "yuv420p", "-movflags", "+faststart", str(path)),
        ],
        check=True,
        timeout=120,
    )


def decode_command(source: str) -> list[str]:
    assert FFMPEG is not None
    return [
        FFMPEG,
        *("-hide_banner", "-loglevel", "error", "-nostdin"),
        *("-ss", str(SEEK_SECONDS), "-i", source, "-t", "2", "-f", "framemd5", "-"),
    ]


async def answer_needs(
    io: IoClient, sid: int, daemon: RunningDaemon, name: str, data: bytes, written: set[int]
) -> None:
    """The engine: on each STREAM_NEED, fetch and verify-write the piece where it starts."""
    async with HttpClient(daemon.port) as http:
        while True:
            start, end = await expect_need(io, sid, within=120)
            assert start < end <= len(data)
            piece = start // PIECE
            if piece not in written:
                offset = piece * PIECE
                await write_piece(http, daemon, name, offset, data[offset : offset + PIECE], True)
                written.add(piece)


async def test_ffmpeg_seeks_past_the_downloaded_part_and_decodes_the_same_frames(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    complete = tmp_path / "complete.mp4"
    make_mp4(complete)
    data = complete.read_bytes()
    with trio.fail_after(60):
        reference = await trio.run_process(decode_command(str(complete)), capture_stdout=True)
    expected = reference.stdout
    assert expected.count(b"\n0,") >= 40  # two seconds of frames

    name = "Some Movie/movie.mp4"
    target = daemon.env.root / name
    target.parent.mkdir()
    target.write_bytes(data[:HEAD_ON_DISK])
    pieces = -(-len(data) // PIECE)
    written = set(range(HEAD_ON_DISK // PIECE))
    async with io_session(daemon.port, daemon.env.token) as io:
        opened = await open_stream(io, 1, name, len(data), [(0, HEAD_ON_DISK)])
        url = opened.text
        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer_needs, io, 1, daemon, name, data, written)
            with trio.fail_after(120):
                assert FFPROBE is not None
                probe = await trio.run_process(
                    [
                        FFPROBE,
                        "-v",
                        "error",
                        "-show_entries",
                        "format=duration",
                        "-of",
                        "csv=p=0",
                        url,
                    ],
                    capture_stdout=True,
                    capture_stderr=True,
                )
                decoded = await trio.run_process(
                    decode_command(url), capture_stdout=True, capture_stderr=True, check=False
                )
            nursery.cancel_scope.cancel()
    assert float(probe.stdout) == pytest.approx(20, abs=0.1)
    assert decoded.returncode == 0, decoded.stderr.decode(errors="replace")
    assert decoded.stdout == expected
    # It really seeked: pieces between the head and the seek target were never fetched.
    assert len(written) < pieces
    assert target.read_bytes() != data
