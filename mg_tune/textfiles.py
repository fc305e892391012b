"""Reading files a user gives mg-tune: undecodable bytes become one line naming the file.

Specs, VOC image sets, CUB text files, COCO JSON and Waterbirds CSVs are UTF-8
text; a file that is not (a binary file, another encoding, random bytes) must
not surface as a ``UnicodeDecodeError`` traceback. What common Windows tools
write is read as meant (:func:`read_text`): CRLF line ends (``splitlines`` and
``csv`` take them), a UTF-8 byte-order mark (Notepad's "UTF-8 with BOM", Excel's
"CSV UTF-8"), and UTF-16 with its byte-order mark (Notepad's "Unicode"). Callers wrap
:func:`decode_problem` into their own error type (``SpecError``,
``DatasetError``), so the message reads ``<file>: not UTF-8 text (byte 0xff at
offset 1)``. :func:`first_line` cuts any message to the one line an error shows;
:func:`expected_one_of` words a bad name of a registry (a data set, a sampler).
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from pathlib import Path


def decode_problem(exc: UnicodeDecodeError) -> str:
    """What is wrong, in a few words: the first undecodable byte and its offset in the file."""
    bad = exc.object[exc.start : exc.start + 1]
    return f"not UTF-8 text (byte 0x{bad.hex()} at offset {exc.start})"


def read_utf8(path: str | Path) -> str:
    """The file's text, a leading UTF-8 byte-order mark dropped; raises ``UnicodeDecodeError`` (see :func:`decode_problem`) or ``OSError``."""
    return Path(path).read_text(encoding="utf-8-sig")


def read_text(path: str | Path) -> str:
    """The text of a file a user's tools wrote: UTF-16 when it starts with a UTF-16 byte-order mark, else UTF-8 (BOM dropped).

    Raises ``UnicodeDecodeError`` (see :func:`decode_problem`) or ``OSError``. Line ends are
    left as they are (``str.splitlines`` and ``csv`` read CRLF).
    """
    raw = Path(path).read_bytes()
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return raw.decode("utf-16")  # the BOM says the byte order and is dropped
    return raw.decode("utf-8-sig")


def first_line(text: str) -> str:
    """The first non-blank line of ``text`` (stripped), or ``""``."""
    return str(text).strip().splitlines()[0] if str(text).strip() else ""


def expected_one_of(names: Sequence[str]) -> str:
    """``Input should be 'a', 'b' or 'c'``: a registry name's error in pydantic's own words for a ``Literal``."""
    quoted = [repr(n) for n in names]
    listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    return f"Input should be {listed}"
