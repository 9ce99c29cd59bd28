"""Reading a student's pictures safely: many uploaded files, or one .zip with a folder per class.

Uploads come from anyone who can open the page, so everything here treats them as hostile:

* **caps** (:class:`PictureCaps`): how many pictures per class and in all, how many bytes in all,
  how large one picture may be; what goes over a cap is left out and named in a message;
* **a zip is never unpacked to disk**: :func:`read_zip` opens it with ``zipfile.ZipFile`` on the
  bytes in memory and reads each member it accepts into memory, with a size limit;
* members that are refused, each named in a message: absolute paths and paths with ``..`` (they
  would point outside the archive's folder), links (a symlink's mode is kept in ``external_attr``),
  archives inside the archive, files that are not pictures (by their extension), members not in a
  ``class_name/picture`` folder, and decompression bombs (a member claiming more bytes than the
  caps allow, or one that shrank more than ``max_ratio`` times when it was zipped; both judged from
  the archive's directory before a byte is decompressed, and the reading stops at the claimed size
  anyway, so a member lying about its size cannot blow up either);
* every picture, from a zip or not, is decoded by :func:`vit_explain.imagefile.load_image`, which
  refuses anything that is not a usable picture.

Nothing here imports streamlit or writes a file; the pictures live in the caller's memory (the
page keeps them in the browser session, so they are gone when the session ends).
"""

from __future__ import annotations

import io
import posixpath
import stat
import zipfile
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .imagefile import InvalidImageError, load_image

__all__ = ["PictureCaps", "CAPS", "ArchiveError", "ZipPictures", "read_zip", "picture_to_array", "human_bytes",
           "PICTURE_EXTENSIONS"]

#: The file names taken as pictures (anything else in a zip is skipped with a message).
PICTURE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
#: Archives inside an archive are refused by name (never opened).
ARCHIVE_EXTENSIONS = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".zst")


@dataclass(frozen=True)
class PictureCaps:
    """The limits on one session's own pictures (the page states them)."""

    min_classes: int = 2
    max_classes: int = 10
    min_per_class: int = 5
    max_per_class: int = 60
    max_pictures: int = 300
    #: bytes of picture files, over all classes (what the session reads, zipped or not)
    max_total_bytes: int = 60 * 2**20
    #: bytes of one zip file (before anything is unpacked)
    max_zip_bytes: int = 60 * 2**20
    #: bytes of one picture file
    max_file_bytes: int = 10 * 2**20
    #: most members a zip may list (its directory is read whole, so this bounds that too)
    max_members: int = 2000
    #: a member that shrank more than this many times when zipped is taken for a bomb
    max_ratio: float = 100.0
    #: longest class name
    max_name: int = 40


CAPS = PictureCaps()


class ArchiveError(ValueError):
    """The archive as a whole cannot be used (not a zip, too many members, ...); the message says why."""


@dataclass
class ZipPictures:
    """What :func:`read_zip` found: the picture bytes by class (sorted by class name) and what it left out."""

    classes: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # one sentence per member left out, naming it

    @property
    def total_bytes(self) -> int:
        return sum(len(b) for items in self.classes.values() for _, b in items)


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


def _is_link(info: zipfile.ZipInfo) -> bool:
    """True for a member stored as a symbolic link (Unix mode in the high 16 bits of external_attr)."""
    return stat.S_ISLNK(info.external_attr >> 16)


def _unsafe_path(name: str) -> bool:
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):  # /etc/x, \\server, C:\...
        return True
    parts = name.replace("\\", "/").split("/")
    return any(p == ".." for p in parts)


def _clean_class_name(name: str, caps: PictureCaps) -> str:
    name = " ".join(name.split())
    return "".join(ch for ch in name if ch.isprintable())[: caps.max_name]


def read_zip(data: bytes, caps: PictureCaps = CAPS) -> ZipPictures:
    """The pictures of a zip in the ImageFolder layout (``class_name/picture.jpg``), read in memory only.

    Returns the accepted members' bytes by class and a message for each member left out. The
    pictures are not decoded here (the caller passes each through ``load_image``). Raises
    :class:`ArchiveError` when the bytes are not a zip or its directory lists more than
    ``caps.max_members`` members.
    """
    if len(data) > caps.max_zip_bytes:
        raise ArchiveError(f"The zip is {human_bytes(len(data))}; this page takes zips of at most "
                           f"{human_bytes(caps.max_zip_bytes)}.")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ArchiveError(f"This file is not a zip archive that can be read ({exc}).") from None
    out = ZipPictures()
    with archive:
        members = archive.infolist()
        if len(members) > caps.max_members:
            raise ArchiveError(f"The zip lists {len(members):,} members; this page reads at most {caps.max_members:,}.")
        total = 0
        count = 0
        for info in members:
            name = info.filename
            shown = repr(name) if not name.isprintable() else name
            if info.is_dir() and not _is_link(info):
                continue
            if _unsafe_path(name):
                out.skipped.append(f"{shown}: refused, its path points outside the archive's folder.")
                continue
            if _is_link(info):
                out.skipped.append(f"{shown}: refused, it is a link, not a picture.")
                continue
            lower = name.lower()
            base = posixpath.basename(name)
            if lower.endswith(ARCHIVE_EXTENSIONS):
                out.skipped.append(f"{shown}: refused, archives inside the archive are not opened.")
                continue
            if base.startswith(".") or "__macosx/" in lower:
                continue  # the hidden files a Mac or an editor leaves: not worth a message
            if not lower.endswith(PICTURE_EXTENSIONS):
                out.skipped.append(f"{shown}: skipped, not a picture (the page takes {', '.join(PICTURE_EXTENSIONS)}).")
                continue
            parts = [p for p in name.split("/") if p]
            if len(parts) < 2:
                out.skipped.append(f"{shown}: skipped, it is not in a folder; put each class's pictures in a folder "
                                   f"named after the class.")
                continue
            label = _clean_class_name(parts[-2], caps)
            if not label:
                out.skipped.append(f"{shown}: skipped, its folder has no usable name.")
                continue
            if info.flag_bits & 0x1:
                out.skipped.append(f"{shown}: skipped, it is encrypted.")
                continue
            if info.file_size > caps.max_file_bytes:
                out.skipped.append(f"{shown}: refused, it would unpack to {human_bytes(info.file_size)} "
                                   f"(a picture may be {human_bytes(caps.max_file_bytes)} at most; it may be a zip bomb).")
                continue
            if info.file_size > caps.max_ratio * max(info.compress_size, 1):
                out.skipped.append(f"{shown}: refused, it shrank {info.file_size / max(info.compress_size, 1):,.0f} "
                                   f"times when zipped (more than {caps.max_ratio:.0f} looks like a zip bomb).")
                continue
            if total + info.file_size > caps.max_total_bytes:
                out.skipped.append(f"{shown}: left out, the pictures would pass {human_bytes(caps.max_total_bytes)} "
                                   f"in all.")
                continue
            if label not in out.classes and len(out.classes) >= caps.max_classes:
                out.skipped.append(f"{shown}: left out, the page takes at most {caps.max_classes} classes.")
                continue
            items = out.classes.setdefault(label, [])
            if len(items) >= caps.max_per_class or count >= caps.max_pictures:
                if not items:
                    del out.classes[label]
                out.skipped.append(f"{shown}: left out, at most {caps.max_per_class} pictures per class and "
                                   f"{caps.max_pictures} in all.")
                continue
            try:
                with archive.open(info) as member:
                    raw = member.read(info.file_size + 1)  # never more than the directory claims (+1 to catch a lie)
            except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError) as exc:
                if not items:
                    del out.classes[label]
                out.skipped.append(f"{shown}: skipped, it cannot be read ({exc}).")
                continue
            if len(raw) > info.file_size:
                if not items:
                    del out.classes[label]
                out.skipped.append(f"{shown}: refused, it holds more than its size in the archive says.")
                continue
            items.append((name, raw))
            total += len(raw)
            count += 1
    out.classes = {k: out.classes[k] for k in sorted(out.classes)}
    return out


def picture_to_array(data, size: int) -> np.ndarray:
    """uint8 ``[size, size, 3]``: the picture decoded by ``load_image`` (untrusted bytes) and squeezed to a square.

    Raises :class:`~vit_explain.imagefile.InvalidImageError` for anything that is not a usable picture.
    """
    image = load_image(data, max_side=max(size * 8, 64))
    return np.asarray(image.resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)


__all__ += ["InvalidImageError"]
