"""JSON files the tool writes (manifests, recipes, model cards, maps): atomic and always valid JSON.

Python writes a non-finite float as ``Infinity`` or ``NaN``, which no browser's
``JSON.parse`` accepts; here it becomes ``null``. (An SNR of ``inf`` means the
output equals its reference: no damage at that magnitude.)
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def finite(x: Any) -> Any:
    """``x`` with every non-finite float, at any depth of dicts, lists and tuples, replaced by ``None``."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    return x


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically (a reader never sees half a file).

    Returns
    -------
    pathlib.Path
        The path written.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(finite(data), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path
