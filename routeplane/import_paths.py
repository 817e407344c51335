"""Import paths a running gunicorn master has not seen: a plugin installed after start-up.

`pip install -e ./my-plugin` adds a `.pth` file to site-packages; Python runs
those only at interpreter start. A HUP reload forks new workers from the
master, so without this they could not import the new plugin and, failing to
boot, would stop the whole server. `refresh()` runs the `.pth` files added
since this module was first imported (in the master, at start-up) and drops
the import system's caches; files it has run are never run twice.
"""

from __future__ import annotations

import importlib
import logging
import os
import site
import sys
from typing import Iterable, List, Optional, Set, Tuple

log = logging.getLogger("routeplane")


def site_dirs() -> List[str]:
    dirs = list(site.getsitepackages()) if hasattr(site, "getsitepackages") else []
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return [d for d in dirs if os.path.isdir(d)]


def _pth_files(dirs: Iterable[str]) -> Set[Tuple[str, str]]:
    out: Set[Tuple[str, str]] = set()
    for d in dirs:
        try:
            out.update((d, name) for name in os.listdir(d) if name.endswith(".pth"))
        except OSError:
            continue
    return out


class PthWatch:
    def __init__(self, dirs: Optional[List[str]] = None) -> None:
        self.dirs = site_dirs() if dirs is None else list(dirs)
        self.seen = _pth_files(self.dirs)

    def refresh(self) -> List[str]:
        """Run the `.pth` files added since the last look; their names. A file that cannot be read or
        whose code fails is logged and skipped (and not tried again): it must not stop the master."""
        new = sorted(_pth_files(self.dirs) - self.seen)
        known = {os.path.normcase(os.path.abspath(p)) for p in sys.path if p}
        for sitedir, name in new:
            self.seen.add((sitedir, name))
            try:
                site.addpackage(sitedir, name, known)  # type: ignore[attr-defined]  # stdlib, stable since 2.x
            except BaseException as exc:  # also SystemExit from an import line
                log.warning("routeplane: %s in %s was skipped: %s: %s", name, sitedir, type(exc).__name__, exc)
        importlib.invalidate_caches()
        return [name for _, name in new]


WATCH = PthWatch()  # the state at start-up: created when the master first imports this module
