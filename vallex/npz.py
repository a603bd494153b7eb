"""Byte-exact ``.npz`` files: the zip layout a file was written with, and arrays written in that layout.

``np.savez`` output differs between the numpy, Python and OS that wrote it (timestamps, header versions,
zip64 fields), so saving a loaded file with numpy would change its bytes. Here a file's layout is read
back as an :class:`NpzStyle` and :func:`write_npz` reproduces it exactly; the default style is that of
the reference project's voice presets, so new files look like theirs.

    style = style_of(data, zipfile.ZipFile(io.BytesIO(data)).infolist()[0])
    assert write_npz(arrays, style) == data          # for a file of arrays written in this layout

Only stored (uncompressed) archives of ``<name>.npy`` members are written, as ``np.savez`` writes them;
:func:`numpy.load` reads the result.
"""
from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NpzStyle:
    """Header fields of an .npz (a stored zip) that differ between the numpy/Python/OS that wrote it.

    The default is the reference presets' layout (written on Windows): version 2.0, real sizes plus a zip64
    extra field in each local header, fixed 1980-01-01 timestamps.
    """

    create_version: int = 20
    create_system: int = 0
    extract_version: int = 20
    local_version: int = 20
    external_attr: int = 0o600 << 16
    date_time: tuple[int, int, int, int, int, int] = (1980, 1, 1, 0, 0, 0)
    local_sizes: bool = True  # False: 0xFFFFFFFF in the local header, sizes only in the zip64 extra
    local_zip64_extra: bool = True


def style_of(data: bytes, info: zipfile.ZipInfo) -> NpzStyle:
    """The header conventions of the member ``info`` of the zip ``data`` (default style if anything is unusual)."""
    offset = info.header_offset
    if info.compress_type != zipfile.ZIP_STORED or data[offset:offset + 4] != b"PK\x03\x04":
        return NpzStyle()
    local_version, = struct.unpack_from("<H", data, offset + 4)
    local_csize, = struct.unpack_from("<I", data, offset + 18)
    name_len, extra_len = struct.unpack_from("<HH", data, offset + 26)
    extra = data[offset + 30 + name_len: offset + 30 + name_len + extra_len]
    return NpzStyle(
        create_version=info.create_version, create_system=info.create_system,
        extract_version=info.extract_version, local_version=local_version, external_attr=info.external_attr,
        date_time=tuple(info.date_time), local_sizes=local_csize != 0xFFFFFFFF,
        local_zip64_extra=extra[:2] == b"\x01\x00",
    )


def write_npz(arrays: Mapping[str, np.ndarray], style: NpzStyle = NpzStyle()) -> bytes:
    """A stored (uncompressed) zip of ``<name>.npy`` members in the order of ``arrays``, with ``style``'s headers.

    Deterministic: the same arrays and style always give the same bytes. Object arrays are refused
    (``allow_pickle=False``).
    """
    year, month, day, hour, minute, second = style.date_time
    dos_time = (hour << 11) | (minute << 5) | (second // 2)
    dos_date = ((year - 1980) << 9) | (month << 5) | day
    out = io.BytesIO()
    central = []
    for key, array in arrays.items():
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=False)
        payload = buffer.getvalue()
        name = f"{key}.npy".encode()
        crc = zlib.crc32(payload)
        size = len(payload)
        extra = struct.pack("<HHQQ", 1, 16, size, size) if style.local_zip64_extra else b""
        header_size = size if style.local_sizes else 0xFFFFFFFF
        offset = out.tell()
        out.write(struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", style.local_version, 0, 0, dos_time, dos_date,
                              crc, header_size, header_size, len(name), len(extra)))
        out.write(name + extra + payload)
        central.append(struct.pack("<4sBBHHHHHIIIHHHHHII", b"PK\x01\x02", style.create_version, style.create_system,
                                   style.extract_version, 0, 0, dos_time, dos_date, crc, size, size, len(name),
                                   0, 0, 0, 0, style.external_attr, offset) + name)
    start = out.tell()
    for entry in central:
        out.write(entry)
    out.write(struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(central), len(central), out.tell() - start, start, 0))
    return out.getvalue()
