import json
import math
import os
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from opsllm.errors import StorageError
from opsllm.files import (
    atomic_dir,
    format_datetime,
    write_bytes_atomic,
    write_json_atomic,
    write_parquet_atomic,
    write_text_atomic,
)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_write_bytes_creates_parents_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "a" / "b" / "data.bin"
    assert write_bytes_atomic(target, b"\x00\x01") == target
    assert target.read_bytes() == b"\x00\x01"
    assert leftovers(target.parent) == []


def test_write_replaces_an_existing_file(tmp_path):
    target = tmp_path / "x.txt"
    write_text_atomic(target, "old")
    write_text_atomic(target, "néw\n")
    assert target.read_text(encoding="utf-8") == "néw\n"
    assert leftovers(tmp_path) == []


def test_written_files_get_ordinary_permissions(tmp_path):
    # Temporary files made by mkstemp would be 0600; the result must follow the umask like any file.
    umask = os.umask(0o022)
    os.umask(umask)
    target = write_text_atomic(tmp_path / "p.txt", "x")
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_os_error_becomes_storage_error_naming_the_path(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    target = tmp_path / "file" / "out.json"
    with pytest.raises(StorageError) as info:
        write_json_atomic(target, {"a": 1})
    assert str(target) in str(info.value)
    assert info.value.path == str(target)
    assert isinstance(info.value.__cause__, OSError)


def test_writing_over_a_folder_fails_cleanly(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(StorageError, match="out"):
        write_bytes_atomic(tmp_path / "out", b"x")
    assert leftovers(tmp_path) == []
    assert (tmp_path / "out").is_dir()


def test_json_keeps_insertion_order_and_unicode(tmp_path):
    target = write_json_atomic(tmp_path / "o.json", {"z": 1, "a": "µs — ok", "m": [1, 2]})
    text = target.read_text(encoding="utf-8")
    assert text == '{\n  "z": 1,\n  "a": "µs — ok",\n  "m": [\n    1,\n    2\n  ]\n}\n'
    assert list(json.loads(text)) == ["z", "a", "m"]


def test_json_datetimes_are_rfc3339_utc_with_z(tmp_path):
    cet = timezone(timedelta(hours=1))
    obj = {
        "utc": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "cet": datetime(2026, 1, 2, 4, 4, 5, 120000, tzinfo=cet),
        "day": date(2026, 1, 2),
        "nested": [{"at": datetime(2026, 1, 2, tzinfo=UTC)}],
    }
    loaded = json.loads(write_json_atomic(tmp_path / "d.json", obj).read_text(encoding="utf-8"))
    assert loaded == {
        "utc": "2026-01-02T03:04:05Z",
        "cet": "2026-01-02T03:04:05.120000Z",
        "day": "2026-01-02",
        "nested": [{"at": "2026-01-02T00:00:00Z"}],
    }
    assert datetime.fromisoformat(loaded["cet"]) == obj["cet"]


def test_json_refuses_naive_datetimes_and_nan(tmp_path):
    with pytest.raises(TypeError, match="naive"):
        write_json_atomic(tmp_path / "n.json", {"t": datetime(2026, 1, 1)})
    with pytest.raises(ValueError):
        write_json_atomic(tmp_path / "n.json", {"v": math.nan})
    assert not (tmp_path / "n.json").exists()
    assert leftovers(tmp_path) == []


def test_json_accepts_numpy_scalars_and_paths(tmp_path):
    obj = {"i": np.int64(3), "f": np.float32(0.5), "b": np.bool_(True), "p": Path("/a/b")}
    loaded = json.loads(write_json_atomic(tmp_path / "n.json", obj).read_text(encoding="utf-8"))
    assert loaded == {"i": 3, "f": 0.5, "b": True, "p": "/a/b"}


def test_format_datetime():
    assert format_datetime(datetime(2026, 5, 6, 7, 8, 9, 1, tzinfo=UTC)) == "2026-05-06T07:08:09.000001Z"


def sample_table() -> pa.Table:
    return pa.table({
        "t": pa.array([1, 2, 3], pa.timestamp("ms", tz="UTC")),
        "name": pa.array(["a", "b", "a"]).dictionary_encode(),
        "v": [0.5, 1.5, -2.0],
    })


def test_parquet_is_zstd_and_byte_identical_across_writes(tmp_path):
    first = write_parquet_atomic(tmp_path / "one" / "t.parquet", sample_table())
    second = write_parquet_atomic(tmp_path / "two" / "t.parquet", sample_table())
    assert first.read_bytes() == second.read_bytes()
    meta = pq.ParquetFile(first).metadata
    assert {meta.row_group(0).column(i).compression for i in range(meta.num_columns)} == {"ZSTD"}
    assert pq.read_table(first).equals(sample_table())


def test_parquet_failure_leaves_no_temp_file(tmp_path):
    (tmp_path / "out.parquet").mkdir()
    with pytest.raises(StorageError):
        write_parquet_atomic(tmp_path / "out.parquet", sample_table())
    assert leftovers(tmp_path) == []


def test_atomic_dir_renames_into_place(tmp_path):
    final = tmp_path / "runs" / "w1"
    with atomic_dir(final) as tmp:
        assert tmp.parent == final.parent
        assert not final.exists()
        write_text_atomic(tmp / "a.txt", "a")
    assert (final / "a.txt").read_text() == "a"
    assert [p.name for p in final.parent.iterdir()] == ["w1"]


def test_atomic_dir_leaves_nothing_when_the_body_raises(tmp_path):
    final = tmp_path / "w"
    with pytest.raises(RuntimeError, match="boom"), atomic_dir(final) as tmp:
        write_text_atomic(tmp / "half.txt", "half")
        raise RuntimeError("boom")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_refuses_an_existing_target(tmp_path):
    final = tmp_path / "w"
    final.mkdir()
    with pytest.raises(StorageError, match="already exists"), atomic_dir(final):
        pytest.fail("the body must not run")
    assert list(tmp_path.iterdir()) == [final]


def test_atomic_dir_refuses_a_target_that_appears_meanwhile(tmp_path):
    final = tmp_path / "w"
    with pytest.raises(StorageError, match="already exists"), atomic_dir(final) as tmp:
        (tmp / "mine.txt").write_text("mine")
        final.mkdir()  # another writer got there first; its (empty) folder must not be replaced
    assert list(final.iterdir()) == []
    assert leftovers(tmp_path) == []
