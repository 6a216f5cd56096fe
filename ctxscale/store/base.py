"""What every part of the store shares: its error, and the one writer of every stored file."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .. import files
from ..errors import UserError


class StoreError(UserError, ValueError):
    """A results folder or file is missing or unreadable; the message names it."""


def write_table(path: Path, data: pa.Table) -> Path:
    """`data` as the Parquet file `path`, atomically (the one writer of every stored row)."""
    return files.atomic_write(path, lambda handle: pq.write_table(data, handle))
