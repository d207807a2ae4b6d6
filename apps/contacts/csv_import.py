"""Reading a CSV file of contacts: header check, streaming parse and validation.

Nothing here writes to the database; the import job that stores the rows is
``apps.contacts.services.imports``.

How a file flows (memory stays flat whatever its size):

1. :func:`read_header` checks the first line before anything is stored: a file that is
   empty, binary, not UTF-8 or without an e-mail column raises :class:`ImportFileError`
   and nothing is imported.
2. :class:`ChunkReader` reads the file line by line, parses CSV records and validates
   each (column count, UTF-8, e-mail address, field lengths). Good rows become
   PostgreSQL COPY text in chunks of :data:`CHUNK_ROWS`; bad rows are kept with their
   first line number and the reason.
3. :func:`read_ahead` runs that parser in a producer thread, so parsing (Python) and
   merging (PostgreSQL, in the import job) overlap and an import uses both cores.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import queue
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from apps.contacts.emails import normalize_email
from apps.contacts.models import MAX_ATTRIBUTES_BYTES, MAX_NAME_LENGTH, ContactImport

CHUNK_ROWS = 50_000
MAX_RAW_LENGTH = 1000
HEADER_PROBE_BYTES = 64 * 1024
csv.field_size_limit(1_000_000)

EMAIL_HEADERS = {"email", "e-mail", "email address", "e-mail address", "email_address", "mail"}
FIRST_NAME_HEADERS = {"first_name", "first name", "firstname", "given name", "given_name"}
LAST_NAME_HEADERS = {
    "last_name",
    "last name",
    "lastname",
    "surname",
    "family name",
    "family_name",
}
_NEEDS_ESCAPE = re.compile(r"[\\\t\n\r\x00]")
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


EMPTY_LINE = "empty line: no record"


class ImportFileError(Exception):
    """The file as a whole cannot be imported (nothing was imported)."""


@dataclass(frozen=True)
class Header:
    delimiter: str
    columns: list[str]
    email: int
    first_name: int | None
    last_name: int | None
    attributes: list[tuple[int, str]]


@dataclass
class Chunk:
    """Parsed lines: ``good`` rows as COPY text, ``rejected`` ones (invalid) and
    ``skipped`` ones (an empty line; a line whose address a later line of the chunk
    repeats, the later values being the ones stored), each ``(line, reason, raw)``."""

    copy_data: bytearray = field(default_factory=bytearray)
    good: int = 0
    rejected: list[tuple[int, str, str]] = field(default_factory=list)
    skipped: list[tuple[int, str, str]] = field(default_factory=list)
    bytes_read: int = 0
    # address → the line it was last seen on, in this chunk
    emails: dict[str, int] = field(default_factory=dict)
    has_duplicates: bool = False
    blank_lines: int = 0
    # Good rows whose address a later row of the chunk repeats: not stored.
    superseded: int = 0

    @property
    def rows_read(self) -> int:
        return self.good + len(self.rejected) + self.blank_lines


def _strip_bom(raw: bytes) -> bytes:
    return raw[len(codecs.BOM_UTF8) :] if raw.startswith(codecs.BOM_UTF8) else raw


def parse_header(first_line: bytes) -> Header:
    """Validate the header line; raises :class:`ImportFileError` naming what is wrong."""
    if b"\x00" in first_line:
        raise ImportFileError("not a CSV file: it contains binary data")
    try:
        text = _strip_bom(first_line).decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise ImportFileError("not a CSV file: the header line is not UTF-8 text") from exc
    if not text.strip():
        raise ImportFileError("the file is empty: no header line with an 'email' column")
    delimiter = max([",", ";", "\t"], key=text.count)
    try:
        columns = next(csv.reader([text], delimiter=delimiter))
    except csv.Error as exc:
        raise ImportFileError(f"not a CSV file: the header line cannot be parsed ({exc})") from exc
    names = [c.strip().lower() for c in columns]
    email = next((i for i, n in enumerate(names) if n in EMAIL_HEADERS), None)
    if email is None:
        raise ImportFileError(
            "the header has no e-mail column (expected a column named 'email'); "
            f"found: {', '.join(repr(c) for c in columns[:10])}"
        )
    first = next((i for i, n in enumerate(names) if n in FIRST_NAME_HEADERS), None)
    last = next((i for i, n in enumerate(names) if n in LAST_NAME_HEADERS), None)
    attributes = [
        (i, (columns[i].strip() or f"column_{i + 1}"))
        for i in range(len(columns))
        if i not in {email, first, last}
    ]
    return Header(delimiter, columns, email, first, last, attributes)


def read_header(stream: BinaryIO) -> Header:
    """Read and validate the header from the start of ``stream`` (position restored)."""
    start = stream.tell()
    probe = stream.read(HEADER_PROBE_BYTES)
    stream.seek(start)
    if not probe.strip():
        raise ImportFileError("the file is empty")
    if b"\x00" in probe:
        raise ImportFileError("not a CSV file: it contains binary data")
    first_line = probe.split(b"\n", 1)[0]
    return parse_header(first_line)


class ChunkReader:
    """Parse and validate records of an open binary CSV file, in chunks of COPY text."""

    def __init__(self, stream: BinaryIO, *, chunk_rows: int = CHUNK_ROWS):
        self.stream = stream
        self.chunk_rows = chunk_rows
        self.header = parse_header(stream.readline())
        self._bad_encoding = False
        self._line = 1

    def _lines(self) -> Iterator[str]:
        # Decoded line by line so a bad byte sequence spoils only its own record.
        # (readline, not iteration: Django's File.__iter__ rewinds to the start.)
        for raw in iter(self.stream.readline, b""):
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                self._bad_encoding = True
                yield raw.decode("utf-8", "replace")

    def _reject(self, chunk: Chunk, line: int, reason: str, fields: list[str]) -> None:
        raw = self.header.delimiter.join(fields).replace("\x00", "")[:MAX_RAW_LENGTH]
        chunk.rejected.append((line, reason, raw))

    def chunks(self) -> Iterator[Chunk]:
        header = self.header
        ncols = len(header.columns)
        email_i, first_i, last_i = header.email, header.first_name, header.last_name
        attributes = header.attributes
        reader = csv.reader(self._lines(), delimiter=header.delimiter)
        chunk = Chunk()
        line_base = 1  # physical lines consumed before this record (header = line 1)
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                start = line_base + 1
                line_base = reader.line_num + 1
                self._reject(chunk, start, f"malformed CSV: {exc}", [])
                continue
            start = line_base + 1
            spanned = reader.line_num + 1 - line_base
            line_base = reader.line_num + 1
            if self._bad_encoding:
                self._bad_encoding = False
                self._reject(chunk, start, "invalid UTF-8 text", fields)
            elif not fields:
                # Not a record, but named in the report, so no line of the file vanishes.
                chunk.skipped.append((start, EMPTY_LINE, ""))
                chunk.blank_lines += 1
            elif len(fields) != ncols:
                reason = f"expected {ncols} columns, found {len(fields)}"
                if spanned > 1:
                    reason += f" (a quoted field runs over lines {start}-{start + spanned - 1})"
                self._reject(chunk, start, reason, fields)
            else:
                email = normalize_email(fields[email_i])
                first = fields[first_i].strip() if first_i is not None else ""
                last = fields[last_i].strip() if last_i is not None else ""
                if email is None:
                    value = fields[email_i].strip()
                    reason = f"invalid e-mail address {value!r}" if value else "no e-mail address"
                    self._reject(chunk, start, reason[:200], fields)
                elif len(first) > MAX_NAME_LENGTH or len(last) > MAX_NAME_LENGTH:
                    self._reject(
                        chunk, start, f"a name is longer than {MAX_NAME_LENGTH} characters", fields
                    )
                else:
                    attrs = {name: fields[i] for i, name in attributes if fields[i]}
                    attrs_text = json.dumps(attrs, ensure_ascii=False) if attrs else "{}"
                    text = f"{start}\t{email}\t{first}\t{last}\t"
                    if _NEEDS_ESCAPE.search(first) or _NEEDS_ESCAPE.search(last):
                        if "\x00" in first or "\x00" in last:
                            self._reject(chunk, start, "a NUL character in a name", fields)
                            continue
                        text = (
                            f"{start}\t{email}\t{first.translate(_COPY_ESCAPES)}"
                            f"\t{last.translate(_COPY_ESCAPES)}\t"
                        )
                    if (
                        len(attrs_text) > MAX_ATTRIBUTES_BYTES // 4
                        and len(attrs_text.encode()) > MAX_ATTRIBUTES_BYTES
                    ):
                        reason = f"the attributes are longer than {MAX_ATTRIBUTES_BYTES} bytes"
                        self._reject(chunk, start, reason, fields)
                        continue
                    if "\\" in attrs_text:
                        attrs_text = attrs_text.replace("\\", "\\\\")
                    if "\x00" in attrs_text:
                        self._reject(chunk, start, "a NUL character in a value", fields)
                        continue
                    chunk.copy_data += f"{text}{attrs_text}\n".encode()
                    chunk.good += 1
                    earlier = chunk.emails.get(email)
                    if earlier is not None:
                        chunk.has_duplicates = True
                        chunk.superseded += 1
                        chunk.skipped.append(
                            (
                                earlier,
                                f"the same address as line {start}, whose values are stored",
                                email,
                            )
                        )
                    chunk.emails[email] = start
            if chunk.rows_read >= self.chunk_rows:
                chunk.bytes_read = self.stream.tell()
                yield chunk
                chunk = Chunk()
        chunk.bytes_read = self.stream.tell()
        yield chunk


def read_ahead(chunks: Iterator[Chunk]) -> Iterator[Chunk]:
    """Run the parser in a thread, two chunks ahead of the database work."""
    q: queue.Queue = queue.Queue(maxsize=2)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for chunk in chunks:
                if stop.is_set():
                    return
                q.put(chunk)
            q.put(done)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            q.put(exc)

    thread = threading.Thread(target=produce, name="csv-import-parser", daemon=True)
    # The database side hands the GIL back after every 128 KB of COPY data and every
    # statement; with Python's default 5 ms switch interval it would wait behind the
    # parser each time. A short interval keeps both threads moving (restored after).
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        sys.setswitchinterval(interval)
        stop.set()
        while thread.is_alive():
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                pass


def rejections_csv(job: ContactImport) -> Iterator[str]:
    """The rejected rows as CSV text (``line,reason,raw``), streamed in order."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["line", "reason", "raw"])
    yield buffer.getvalue()
    rows = job.rejections.order_by("line").values_list("line", "reason", "raw")
    for line, reason, raw in rows.iterator(chunk_size=2000):
        buffer.seek(0)
        buffer.truncate()
        writer.writerow([line, reason, raw])
        yield buffer.getvalue()
