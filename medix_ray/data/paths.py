"""File paths taken from data rows stay inside the data set's folder.

An image path in a dataset row is data, not a place to read from at will: a row could name
`/etc/passwd` or `../../secrets/key.png`. `confine` joins a row's relative path to the data set's
folder and refuses absolute paths and any path whose `..` parts leave that folder:

    >>> confine("/data/slake", "imgs/a.png")
    '/data/slake/imgs/a.png'
    >>> confine("/data/slake", "../other/a.png")
    Traceback (most recent call last):
    ...
    medix_ray.data.paths.PathEscapeError: image path '../other/a.png' leaves the data folder /data/slake

The check is on the path as written (normalised, not resolved through symbolic links), so an
image folder that the data set's owner linked in from another disk still works.
"""

from __future__ import annotations

import os


class PathEscapeError(ValueError):
    """A path from a data row is absolute or leaves its data folder; the message names both."""


def confine(base_dir: str | os.PathLike, path: str) -> str:
    """Returns `base_dir/path`; raises PathEscapeError for an absolute `path` or one that leaves `base_dir`."""
    base = os.path.abspath(os.fspath(base_dir))
    if os.path.isabs(path) or path.startswith("\\"):
        raise PathEscapeError(f"image path {path!r} is absolute; it must be relative to the data folder {base}")
    joined = os.path.abspath(os.path.join(base, path))
    if os.path.commonpath([base, joined]) != base or joined == base:
        raise PathEscapeError(f"image path {path!r} leaves the data folder {base}")
    return joined
