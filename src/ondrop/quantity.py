"""Sizes and CPU amounts written the Kubernetes way ("256Mi", "1G", "0.5", "500m")."""

from __future__ import annotations

import math
import re

_BYTES = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]i?|[kmgtp]i?|B)?\s*$")
_FACTORS = {
    None: 1,
    "B": 1,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "P": 1000**5,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "Pi": 1024**5,
}


def parse_bytes(text: str | int) -> int:
    """Bytes in `text`: a plain number or one with a K/M/G/T suffix (Ki/Mi/Gi: powers of 1024)."""
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"expected a size such as 256Mi or 1G, got {text!r}")
        return text
    match = _BYTES.match(str(text))
    if not match:
        raise ValueError(f"expected a size such as 256Mi or 1G, got {text!r}")
    number, unit = match.groups()
    if unit and unit != "B":
        unit = unit[0].upper() + unit[1:]
    return int(float(number) * _FACTORS[unit])


def parse_cpu(text: str | float | int) -> float:
    """CPU cores in `text`: "0.5", 2 or "500m" (millicores)."""
    raw = str(text).strip()
    try:
        cores = float(raw[:-1]) / 1000 if raw.endswith("m") else float(raw)
    except ValueError:
        raise ValueError(f"expected a CPU amount such as 0.5, 2 or 500m, got {text!r}") from None
    if not math.isfinite(cores) or cores <= 0:
        raise ValueError(f"expected a positive CPU amount, got {text!r}")
    return cores


def format_bytes(size: int) -> str:
    """A short human form of `size` in its largest unit: exact where it is a whole number
    of that unit (`256Mi`, the inverse of parse_bytes), else to a tenth (`23.5Gi`)."""
    for unit in ("Pi", "Ti", "Gi", "Mi", "Ki"):
        factor = _FACTORS[unit]
        if size >= factor:
            whole, rest = divmod(size, factor)
            return f"{whole}{unit}" if rest == 0 else f"{size / factor:.1f}{unit}"
    return f"{size}B"
