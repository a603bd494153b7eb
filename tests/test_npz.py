"""The byte-exact .npz writer: numpy reads what it writes, and a file's own layout is reproduced."""
from __future__ import annotations

import io
import zipfile

import numpy as np

from vallex.npz import NpzStyle, style_of, write_npz


def test_numpy_reads_the_arrays_in_order_and_the_bytes_are_deterministic():
    arrays = {"b": np.arange(6, dtype=np.int64).reshape(2, 3), "a": np.array(2, dtype=np.int32)}
    data = write_npz(arrays)
    assert write_npz(arrays) == data
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert [info.filename for info in archive.infolist()] == ["b.npy", "a.npy"]
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
    loaded = np.load(io.BytesIO(data), allow_pickle=False)
    assert np.array_equal(loaded["b"], arrays["b"]) and loaded["a"].dtype == np.int32 and int(loaded["a"]) == 2


def test_a_written_style_is_read_back():
    style = NpzStyle(create_system=3, external_attr=0o644 << 16, date_time=(2023, 5, 17, 10, 30, 42),
                     local_sizes=False, local_zip64_extra=True)
    data = write_npz({"x": np.zeros(3)}, style)
    first = zipfile.ZipFile(io.BytesIO(data)).infolist()[0]
    assert style_of(data, first) == style
    assert write_npz({"x": np.zeros(3)}, style_of(data, first)) == data
