"""CSV exports a person opens in a spreadsheet, written one way for every service.

UTF-8 with a byte-order mark, so a spreadsheet reads the accents of Indonesian names right; a header row; and
every text cell that a spreadsheet would run as a formula (CSV injection: a cell starting with ``=``, ``+``,
``-``, ``@``, a tab or a carriage return) prefixed with ``'``, so it shows as the text it is. Numbers are
written as numbers (a negative score is a number, not a formula); a phone number is text (``'+62…``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

#: A spreadsheet runs a cell that starts with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_cell(value: Any) -> str:
    """``value`` as a CSV cell a spreadsheet shows as it is: a formula-like text gets a leading ``'``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def spreadsheet_csv(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    """The CSV document: BOM, header row, every cell through :func:`spreadsheet_cell`."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([spreadsheet_cell(value) for value in row])
    return out.getvalue().encode("utf-8")
