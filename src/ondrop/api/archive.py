"""A tar body holding many files (`POST /system/files/{provider}`, what `ondrop put` sends
for many small files): read whole and checked before anything is stored. Only regular
files are taken, each at a safe key under the folder asked for; folder entries are
skipped; a link, a device, a name that climbs out (`..`) or one given twice refuses
the whole body, naming the member.
"""

from __future__ import annotations

import posixpath
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ondrop.errors import InvalidKeyError
from ondrop.storage.base import check_key

MAX_MEMBERS = 100_000  # files one body may hold


@dataclass(frozen=True)
class Member:
    key: str  # where it is stored
    entry: tarfile.TarInfo


def members(body: Path, folder: str) -> list[Member]:
    """The files of the tar at `body`, each with its key under `folder`."""
    found: list[Member] = []
    keys: set[str] = set()
    entries = 0
    room = body.stat().st_size  # what the members' contents can add up to at most
    try:
        with tarfile.open(body, "r:") as tar:
            for entry in tar:
                entries += 1
                if entries > MAX_MEMBERS:
                    raise InvalidKeyError(
                        f"the archive holds more than {MAX_MEMBERS:,} entries: send the files "
                        "in several (nothing was stored)"
                    )
                if entry.isdir():
                    continue
                name = entry.name.removeprefix("./")
                # Plain file entries only: a sparse one would expand to more than was sent.
                if entry.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or entry.issparse():
                    kind = "a link" if entry.issym() or entry.islnk() else "not a regular file"
                    raise InvalidKeyError(
                        f"member {name!r} of the archive is {kind}: only regular files are "
                        "uploaded (nothing was stored)"
                    )
                key = check_key(posixpath.join(folder, name) if folder else name)
                if key in keys:
                    raise InvalidKeyError(
                        f"member {name!r} is in the archive twice (nothing was stored)"
                    )
                keys.add(key)
                room -= entry.size
                if room < 0:
                    raise InvalidKeyError(
                        f"member {name!r} claims more bytes than the archive holds (nothing "
                        "was stored)"
                    )
                found.append(Member(key, entry))
    except tarfile.TarError as exc:
        raise InvalidKeyError(
            f"the body is not a tar archive ({exc}): send an uncompressed tar of the files"
        ) from None
    if not found:
        raise InvalidKeyError("the archive holds no file (nothing was stored)")
    return found
