"""The reader of a download still being written: it sees the bytes as they land, the end only
once the download completed, and a retried or failed download voids what it read."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runtime.images.growing_file import DownloadAbandoned, GrowingFile


def written(path: Path, data: bytes, reader: GrowingFile, attempt: int = 1) -> None:
    with path.open("ab") as out:
        out.write(data)
    reader.progress(attempt, path.stat().st_size)


def read_in_thread(reader: GrowingFile) -> tuple[threading.Thread, list[bytes | Exception]]:
    result: list[bytes | Exception] = []

    def read_all() -> None:
        chunks = []
        try:
            while chunk := reader.read(4):
                chunks.append(chunk)
        except DownloadAbandoned as exc:
            result.append(exc)
            return
        result.append(b"".join(chunks))

    thread = threading.Thread(target=read_all)
    thread.start()
    return thread, result


def finished(thread: threading.Thread) -> bool:
    thread.join(timeout=10)
    return not thread.is_alive()


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[GrowingFile]:
    growing = GrowingFile()
    growing.follow(tmp_path / "blob")
    yield growing
    growing.close()


def test_the_reader_gets_every_byte_and_the_end_only_after_finish(
    tmp_path: Path, reader: GrowingFile
) -> None:
    blob = tmp_path / "blob"
    thread, result = read_in_thread(reader)
    written(blob, b"hello ", reader)
    written(blob, b"world", reader)

    assert thread.is_alive()
    reader.finish()

    assert finished(thread)
    assert result == [b"hello world"]


def test_the_file_stays_readable_after_it_is_renamed_into_the_store(
    tmp_path: Path, reader: GrowingFile
) -> None:
    blob = tmp_path / "blob"
    written(blob, b"layer", reader)
    blob.rename(tmp_path / "stored")
    reader.finish()

    assert reader.read(-1) == b"layer"
    assert reader.read(-1) == b""


@pytest.mark.parametrize(
    "void",
    [
        pytest.param(lambda reader, blob: reader.abandon(), id="abandoned"),
        pytest.param(
            lambda reader, blob: (blob.write_bytes(b""), reader.progress(2, 0)), id="retried"
        ),
    ],
)
def test_a_failed_or_retried_download_voids_the_read(
    tmp_path: Path, reader: GrowingFile, void: Callable[[GrowingFile, Path], object]
) -> None:
    blob = tmp_path / "blob"
    written(blob, b"first attempt", reader)
    assert reader.read(-1) == b"first attempt"

    void(reader, blob)

    with pytest.raises(DownloadAbandoned):
        reader.read(-1)


def test_a_waiting_reader_wakes_when_the_download_is_abandoned(
    tmp_path: Path, reader: GrowingFile
) -> None:
    thread, result = read_in_thread(reader)
    written(tmp_path / "blob", b"partial", reader)

    reader.abandon()

    assert finished(thread)
    assert len(result) == 1
    assert isinstance(result[0], DownloadAbandoned)


def test_a_reader_that_started_after_a_retry_follows_the_new_attempt(
    tmp_path: Path, reader: GrowingFile
) -> None:
    blob = tmp_path / "blob"
    written(blob, b"void", reader)
    blob.write_bytes(b"")
    reader.progress(2, 0)
    written(blob, b"fresh", reader, attempt=2)
    reader.finish()

    assert reader.read(-1) == b"fresh"
    assert reader.read(-1) == b""
