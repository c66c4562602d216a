"""Writing small text files so that a reader, or a run killed mid-write, sees the old file
or the new one, never half of one."""
from __future__ import annotations

import json
import os
from pathlib import Path

from utils.cli import UserError
from utils.names import shown


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``.

    A failure (disk full, read-only folder, a folder in the way) is a :class:`UserError`
    naming the file; the previous file is untouched and no temporary file is left.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"cannot write {shown(path)}: {exc.strerror or exc}") from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # the folder could not be written in the first place


def write_json(path: str | os.PathLike, data) -> None:
    """:func:`write_atomic` of ``data`` as indented JSON."""
    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
