"""Files written whole or not at all (`shared.atomic_file`), as every service writes them."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from shared.atomic_file import is_temporary, replacing, write_whole


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if is_temporary(p.name)]


def test_a_write_replaces_the_file_whole_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    target.write_bytes(b"old")
    write_whole(target, b"new")
    assert target.read_bytes() == b"new"
    assert leftovers(tmp_path) == []


def test_a_write_that_fails_midway_leaves_the_old_file_and_nothing_beside_it(tmp_path: Path) -> None:
    target = tmp_path / "weights.npz"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), replacing(target) as handle:
        handle.write(b"half of the ne")
        assert leftovers(tmp_path) != []  # the bytes go beside the target, under a hidden name
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_writers_of_one_file_never_share_a_temporary(tmp_path: Path) -> None:
    # two workers sharing a model cache once renamed each other's `model.keras.part` away
    target = tmp_path / "model.keras"
    contents = [bytes([k]) * 200_000 for k in range(8)]
    errors: list[BaseException] = []

    def write(data: bytes) -> None:
        try:
            for _ in range(20):
                write_whole(target, data)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(data,)) for data in contents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert target.read_bytes() in contents  # one writer's bytes, whole
    assert leftovers(tmp_path) == []


def test_an_exclusive_write_refuses_an_existing_name_and_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "claim"
    write_whole(target, b"first", exclusive=True)
    with pytest.raises(FileExistsError):
        write_whole(target, b"second", exclusive=True)
    assert target.read_bytes() == b"first"
    assert leftovers(tmp_path) == []


def test_a_durable_write_is_synced_before_it_is_renamed(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "message.json"
    synced: list[bool] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(not target.exists())
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_whole(target, b"{}", durable=True)
    assert synced == [True]  # once, while the target did not exist yet
    write_whole(tmp_path / "cache.bin", b"x")
    assert synced == [True]  # not durable: no sync


def test_a_written_file_has_the_permissions_of_any_new_file(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        write_whole(tmp_path / "model.tflite", b"x")
        (tmp_path / "plain").write_bytes(b"x")
    finally:
        os.umask(previous)
    modes = {name: (tmp_path / name).stat().st_mode & 0o777 for name in ("model.tflite", "plain")}
    assert modes == {"model.tflite": 0o644, "plain": 0o644}
