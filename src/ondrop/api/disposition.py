"""Content-Disposition both ways (RFC 6266): the header a download or a `/run` reply
names its file with, and the name an invocation's header gives its input file.

Any UTF-8 name travels: `filename` holds an ASCII fallback that cannot end the quoted
string or start a parameter, and `filename*` (RFC 5987) the exact name whenever the
fallback is not it, as RFC 6266 appendix D advises.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

# What the quoted fallback keeps: printable ASCII but the quote and backslash (they would
# end or escape the quoted string), ';' (for parsers that split on it) and '%' (some
# clients percent-decode `filename`).
_UNSAFE = frozenset('"\\;%')
_PARAM = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"?|[^;]*)')


def attachment(name: str) -> str:
    """`attachment; filename="<ASCII fallback>"[; filename*=UTF-8''<percent-encoded>]`."""
    fallback = "".join(c if " " <= c <= "~" and c not in _UNSAFE else "_" for c in name)
    header = f'attachment; filename="{fallback}"'
    if fallback != name:
        # A name read off a disk may hold undecodable bytes (surrogates); they become U+FFFD.
        exact = quote(name.encode("utf-8", errors="replace"), safe="")
        header += f"; filename*=UTF-8''{exact}"
    return header


def filename(header: str) -> str | None:
    """The file name a Content-Disposition gives, or None: `filename*` when it is UTF-8 or
    Latin-1, else `filename`, whose raw bytes are taken as UTF-8 when they are (curl sends
    names so). Lenient, as clients are: an unquoted name may hold spaces."""
    params: dict[str, str] = {}
    for match in _PARAM.finditer(";" + header):  # the type may be missing
        key, raw = match.group(1).lower(), match.group(2).strip()
        if raw.startswith('"'):
            raw = raw[1:-1] if len(raw) > 1 and raw.endswith('"') else raw[1:]
            raw = re.sub(r"\\(.)", r"\1", raw)
        params.setdefault(key, raw)
    extended = params.get("filename*", "")
    charset, _, rest = extended.partition("'")
    _language, _, encoded = rest.partition("'")
    if encoded and charset.lower() in {"utf-8", "iso-8859-1"}:
        try:
            return unquote(encoded, encoding=charset.lower(), errors="strict")
        except UnicodeDecodeError:
            pass  # not what it says it is: the plain parameter, if any
    plain = params.get("filename")
    if plain is None:
        return None
    try:
        return plain.encode("latin-1").decode("utf-8")  # the server read the bytes as Latin-1
    except (UnicodeEncodeError, UnicodeDecodeError):
        return plain
