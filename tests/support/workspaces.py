"""What a running platform's work folders may hold between jobs: the folders it keeps for
the next job, emptied (the files each job overwrites aside)."""

from __future__ import annotations

from pathlib import Path

from ondrop.supervisor import KEPT, PARTS, SPARE


def leftovers(work: Path) -> list[str]:
    """What in `work` (a platform's folder of work folders) is not a kept, emptied work
    folder: what some job left behind."""
    found = []
    for folder in work.iterdir():
        if not folder.is_dir() or folder.is_symlink():
            found.append(folder.name)
            continue
        for entry in folder.iterdir():
            if entry.name in PARTS and entry.is_dir() and not entry.is_symlink():
                found += [p.relative_to(work).as_posix() for p in entry.iterdir()]
            elif entry.name in ("log", SPARE) and entry.stat().st_size:
                found.append(f"{folder.name}/{entry.name} (not emptied)")
            elif entry.name not in (*KEPT, "log"):
                found.append(entry.relative_to(work).as_posix())
    return sorted(found)
