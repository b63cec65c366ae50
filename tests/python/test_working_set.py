# SPDX-License-Identifier: GPL-2.0-or-later
"""formats.working_set: the order file QEMU's handoff-record-stop writes,
read as input from disk."""

import pytest

from qemu_handoff.formats import working_set


def write(tmp_path, body, magic=working_set.MAGIC):
    path = tmp_path / "order"
    path.write_bytes(f"{magic}\n{body}".encode("latin-1"))
    return path


def test_reads_entries_in_order(tmp_path):
    path = write(tmp_path, "pc.ram 12154 3753292\n/rom@etc/acpi/tables 7 "
                 "3753292\ndisk 0 4000000\n")
    assert working_set.read(path) == [("pc.ram", 12154, 3753292),
                                      ("/rom@etc/acpi/tables", 7, 3753292),
                                      ("disk", 0, 4000000)]


@pytest.mark.parametrize("body, cause", [
    ("disk 1 5\ndisk 1 6\n", "region disk chunk 1 named twice"),
    ("disk 1 5\ndisk 2 4\n", "time goes back"),
    ("disk 01 5\n", "not 'REGION CHUNK NS'"),
    ("disk -1 5\n", "not 'REGION CHUNK NS'"),
    ("disk 1\n", "not 'REGION CHUNK NS'"),
    ("disk 1 5", "not 'REGION CHUNK NS'"),          # no end of line
    ("disk  1 5\n", "not 'REGION CHUNK NS'"),
    ("disk 1 5 6\n", "not 'REGION CHUNK NS'"),
    ("pc ram 1 5\n", "not 'REGION CHUNK NS'"),
    ("disk 1 5\n\n", "not 'REGION CHUNK NS'"),
    ("disk 1 5\r\n", "not 'REGION CHUNK NS'"),
    ("disk 1 5\rdisk 2 6\n", "not 'REGION CHUNK NS'"),
    ("disk 1 9223372036854775808\n", "out of range"),
    ("disk 1 " + "1" * 80 + "\n", "not 'REGION CHUNK NS'"),
    ("x" * 256 + " 1 5\n", "not 'REGION CHUNK NS'"),
    ("disk 1 5\n\xff\xfe 1 5\n", "not 'REGION CHUNK NS'"),
])
def test_refuses_broken_files_by_name(tmp_path, body, cause):
    with pytest.raises(working_set.WorkingSetError, match=cause):
        working_set.read(write(tmp_path, body))


def test_a_ram_block_name_may_be_as_long_as_qemu_allows(tmp_path):
    name = "y" * 255                    # RAMBlock idstr: 256 bytes, NUL
    assert working_set.read(write(tmp_path, f"{name} 0 1\n")) == \
        [(name, 0, 1)]


def test_refuses_another_format_and_too_many_entries(tmp_path):
    with pytest.raises(working_set.WorkingSetError, match="first line"):
        working_set.read(write(tmp_path, "disk 1 5\n",
                               magic="something else"))
    with pytest.raises(working_set.WorkingSetError, match="more than 2"):
        working_set.read(write(tmp_path, "disk 1 5\ndisk 2 5\ndisk 3 5\n"),
                         max_entries=2)
