"""The zip reader for a student's own pictures: hostile archives are refused by name, nothing touches the disk."""

from __future__ import annotations

import io
import os
import stat
import tempfile
import zipfile

import numpy as np
import pytest
from PIL import Image

from vit_explain.imagefile import InvalidImageError
from vit_explain.picture_archive import ArchiveError, PictureCaps, picture_to_array, read_zip


def png(colour=(200, 30, 30), size=16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, "PNG")
    return buffer.getvalue()


def make_zip(members: list[tuple[str, bytes]] | None = None, *, build=None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members or []:
            archive.writestr(name, data)
        if build is not None:
            build(archive)
    return buffer.getvalue()


def _disk_listing() -> set[str]:
    return set(os.listdir(tempfile.gettempdir())) | set(os.listdir(os.getcwd()))


def test_a_good_zip_gives_its_classes_sorted():
    data = make_zip([("pets/cat/a.png", png()), ("pets/cat/b.png", png()), ("pets/dog/c.png", png((0, 0, 200))),
                     ("pets/readme.txt", b"hello")])
    found = read_zip(data)
    assert list(found.classes) == ["cat", "dog"]
    assert [n for n, _ in found.classes["cat"]] == ["pets/cat/a.png", "pets/cat/b.png"]
    assert any("readme.txt" in s and "not a picture" in s for s in found.skipped)


def test_hostile_members_are_refused_by_name_and_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = _disk_listing()

    def hostile(archive: zipfile.ZipFile) -> None:
        archive.writestr("/etc/cat/abs.png", png())
        archive.writestr("cat/../../escape.png", png())
        link = zipfile.ZipInfo("cat/link.png")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
        archive.writestr("cat/inner.zip", make_zip([("x/y.png", png())]))
        archive.writestr("cat/notes.pdf", b"%PDF-1.4 not a picture")
        archive.writestr("cat/zeros.png", bytes(100 * 2**20))  # 100 MB of zeros: a bomb (ratio ~1000)
        archive.writestr("cat/small-bomb.png", bytes(5 * 2**20))  # under the size cap, but shrank ~1000 times
        archive.writestr("cat/good.png", png())

    data = make_zip(build=hostile)
    assert len(data) < 2 * 2**20
    found = read_zip(data)
    after = _disk_listing()
    assert after == before  # nothing unpacked, into the temp dir or the working directory
    assert list(tmp_path.iterdir()) == []
    assert [n for n, _ in found.classes["cat"]] == ["cat/good.png"]
    text = "\n".join(found.skipped)
    for name, why in [("/etc/cat/abs.png", "outside"), ("cat/../../escape.png", "outside"), ("cat/link.png", "link"),
                      ("cat/inner.zip", "archives inside"), ("cat/notes.pdf", "not a picture"),
                      ("cat/zeros.png", "bomb"), ("cat/small-bomb.png", "shrank")]:
        assert any(s.startswith(name) and why in s for s in found.skipped), (name, text)


def test_a_member_claiming_a_huge_size_is_refused_before_reading():
    def claim(archive: zipfile.ZipFile) -> None:
        archive.writestr("cat/big.png", png())

    data = bytearray(make_zip(build=claim))
    # patch the central directory's uncompressed size of the member to 4 GB - 1
    at = data.rfind(b"PK\x01\x02")
    data[at + 24 : at + 28] = (2**32 - 1).to_bytes(4, "little")
    found = read_zip(bytes(data))
    assert not found.classes
    assert any("cat/big.png" in s and "unpack to" in s for s in found.skipped), found.skipped


def test_a_member_lying_about_its_size_is_not_read_past_it():
    data = bytearray(make_zip([("cat/a.png", png())], build=None))
    at = data.rfind(b"PK\x01\x02")
    real = int.from_bytes(data[at + 24 : at + 28], "little")
    data[at + 24 : at + 28] = (real // 2).to_bytes(4, "little")  # claims half its size
    found = read_zip(bytes(data))
    assert not found.classes
    assert len(found.skipped) == 1 and "cat/a.png" in found.skipped[0]


def test_caps_on_classes_pictures_and_bytes():
    caps = PictureCaps(max_classes=2, max_per_class=3, max_pictures=5, max_total_bytes=10 * 2**20)
    members = [(f"c{k}/{i}.png", png((k * 40, i * 20, 0))) for k in range(3) for i in range(4)]
    found = read_zip(make_zip(members), caps)
    assert list(found.classes) == ["c0", "c1"]
    assert [len(v) for v in found.classes.values()] == [3, 2]  # 3 per class, 5 in all
    assert sum("at most 2 classes" in s for s in found.skipped) == 4
    assert sum("pictures per class" in s for s in found.skipped) == 3  # c0/3, then c1/2 and c1/3 (5 in all)
    small = PictureCaps(max_total_bytes=len(png()) * 2 + 10)
    found = read_zip(make_zip([(f"a/{i}.png", png()) for i in range(4)]), small)
    assert len(found.classes["a"]) == 2 and sum("in all" in s for s in found.skipped) == 2
    with pytest.raises(ArchiveError, match="at most"):
        read_zip(bytes(1001), PictureCaps(max_zip_bytes=1000))


def test_not_a_zip_and_too_many_members():
    with pytest.raises(ArchiveError, match="not a zip"):
        read_zip(b"certainly not a zip file")
    with pytest.raises(ArchiveError, match="members"):
        read_zip(make_zip([(f"a/{i}.png", b"x") for i in range(30)]), PictureCaps(max_members=20))


def test_pictures_go_through_the_safe_loader():
    picture = picture_to_array(png((10, 200, 30), size=50), 32)
    assert picture.shape == (32, 32, 3) and picture.dtype == np.uint8
    assert tuple(picture[16, 16]) == (10, 200, 30)
    with pytest.raises(InvalidImageError):
        picture_to_array(b"%PDF-1.4 hello", 32)
    with pytest.raises(InvalidImageError):
        picture_to_array(png()[:40], 32)  # cut off
