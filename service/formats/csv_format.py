"""CSV for image classification: ``file_name,labels,provenance,score``.

One row per image; several labels (multilabel) are joined with ``;`` in
class order as given; an image with no label has an empty ``labels`` cell.
``provenance`` and ``score`` are empty when unknown. ``load`` needs the
``file_name`` and ``labels`` columns, reads ``provenance``/``score`` when
present and ignores other columns; a UTF-8 BOM is allowed.

Spreadsheet formulas: a text cell (``file_name``, ``labels``) that starts
with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return (the OWASP list),
or with ``'``, is written with one ``'`` in front, so that a spreadsheet shows
it as text instead of running it. ``load`` removes exactly one leading ``'``
when the rest of the cell starts with one of those characters (``'`` included),
so ``dump`` then ``load`` gives back the original text; any other ``'`` is
kept. Numbers (``score``) are never prefixed, so ``-0.5`` stays a number.

CSV cannot carry shapes (``dump`` refuses a label set with shapes rather than
drop them), image sizes (``load`` takes them from ``image_sizes`` when given),
class names containing ``;``, or a class list: ``load`` gives the classes in
order of first use, so classes no image uses are lost.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping

from ._io import as_bytes, decode_text, fmt_num
from .base import (
    ImageLabels,
    LabelSet,
    as_number,
    as_provenance,
    dedupe,
    fail,
    lookup_size,
    prepare,
)

NAME = "csv"
COLUMNS = ("file_name", "labels", "provenance", "score")
SEPARATOR = ";"
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a cell as a formula (OWASP)."""
QUOTE = "'"


def protect(cell: str) -> str:
    """``cell`` with a ``'`` in front when it starts like a formula or with ``'``."""
    return QUOTE + cell if cell.startswith((*FORMULA_STARTS, QUOTE)) else cell


def unprotect(cell: str) -> str:
    """The inverse of :func:`protect`: drop one ``'`` that protects a formula or a ``'``."""
    if cell.startswith(QUOTE) and cell[1:].startswith((*FORMULA_STARTS, QUOTE)):
        return cell[1:]
    return cell


class CsvFormat:
    """Classification CSV import and export (see the module docstring)."""

    name = NAME
    media_type = "text/csv"
    suffix = ".csv"

    def load(
        self, data: bytes, *, image_sizes: Mapping[str, tuple[int, int]] | None = None
    ) -> LabelSet:
        data = as_bytes(data, NAME)
        text = decode_text(data, NAME)
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        try:
            rows = list(reader)
        except csv.Error as exc:
            raise fail(NAME, f"line {reader.line_num}", f"invalid CSV ({exc})") from None
        if not rows:
            raise fail(NAME, "", "empty file: expected a header " + ",".join(COLUMNS))
        header = [cell.strip() for cell in rows[0]]
        missing = [column for column in COLUMNS[:2] if column not in header]
        if missing:
            raise fail(NAME, "line 1", f"header lacks column(s) {', '.join(missing)}")
        if len(set(header)) != len(header):
            raise fail(NAME, "line 1", "duplicate column names")
        col = {name: header.index(name) for name in COLUMNS if name in header}
        images: list[ImageLabels] = []
        seen: set[str] = set()
        for line, row in enumerate(rows[1:], start=2):
            if not any(cell.strip() for cell in row):
                continue
            where = f"line {line}"
            if len(row) != len(header):
                raise fail(NAME, where, f"expected {len(header)} cells, got {len(row)}")
            image = _load_row(row, col, where)
            if image.file_name in seen:
                raise fail(NAME, where, f"file name {image.file_name!r} appears twice")
            seen.add(image.file_name)
            if (size := lookup_size(image_sizes, image.file_name)) is not None:
                image.width, image.height = size
            images.append(image)
        classes = dedupe(label for image in images for label in image.labels)
        return LabelSet(classes=classes, images=images)

    def dump(self, labels: LabelSet) -> bytes:
        labels = prepare(labels, NAME)
        for name in labels.classes:
            if SEPARATOR in name or name != name.strip():
                raise fail(NAME, "classes", f"class name {name!r} has a ';' or outer spaces")
        lines = [_row(COLUMNS)]
        for image in labels.images:
            if image.shapes:
                raise fail(NAME, f"image {image.file_name!r}",
                           "CSV is classification only and cannot carry boxes or polygons")
            lines.append(_row([protect(image.file_name), protect(SEPARATOR.join(image.labels)),
                               image.provenance or "",
                               "" if image.score is None else fmt_num(image.score)]))
        return "".join(lines).encode("utf-8")


def _row(cells: Iterable[str]) -> str:
    r"""One CSV line ending in ``\n``; a cell holding ``,``, ``"``, LF or CR is quoted.

    ``csv.writer`` with a ``\n`` line terminator leaves a lone CR unquoted,
    which splits the row for every reader (a file name ``"a\r=cmd()"`` would
    start a row of its own), hence this writer.
    """
    return ",".join(f'"{cell.replace(chr(34), chr(34) * 2)}"'
                    if any(ch in cell for ch in ',"\r\n') else cell for cell in cells) + "\n"


def _load_row(row: list[str], col: dict[str, int], where: str) -> ImageLabels:
    file_name = unprotect(row[col["file_name"]].strip())
    if not file_name:
        raise fail(NAME, where, "empty file_name")
    cell = unprotect(row[col["labels"]].strip())
    image = ImageLabels(file_name=file_name,
                        labels=dedupe(p.strip() for p in cell.split(SEPARATOR) if p.strip()))
    if "provenance" in col:
        image.provenance = as_provenance(row[col["provenance"]].strip(), NAME,
                                         f"{where} provenance")
    if "score" in col and row[col["score"]].strip():
        image.score = as_number(row[col["score"]], NAME, f"{where} score")
    return image
