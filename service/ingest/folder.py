"""List the image files of a server-side folder, for imports and watched folders.

A file is a candidate when its first bytes sniff as a supported image kind
(the name does not matter, so extension-less DICOM files are found and a
``notes.jpg`` that is really text is not). Hidden files and folders (names
starting with ``.``) are skipped. Symbolic links are skipped by default;
when followed, only those that resolve inside the root are, and each real
folder is entered once (no loops).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

from service.ingest.sniff import SNIFF_BYTES, sniff_kind

ErrorHandler = Callable[[OSError], None]


def relative_key(root: Path, path: Path) -> str:
    """The key :func:`scan_folder` uses in ``seen``: ``path`` relative to ``root``, with ``/``."""
    return Path(path).relative_to(root).as_posix()


def _is_image(path: str, on_error: ErrorHandler | None) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(SNIFF_BYTES)
    except OSError as exc:
        if on_error is not None:
            on_error(exc)
        return False
    return sniff_kind(head) is not None


class _Walker:
    """Depth-first walk with sorted entries; state shared across the recursion."""

    def __init__(
        self,
        root: Path,
        seen: Collection[str],
        follow_symlinks: bool,
        on_error: ErrorHandler | None,
    ) -> None:
        self.root = root
        self.real_root = root.resolve()
        self.seen = seen
        self.follow_symlinks = follow_symlinks
        self.on_error = on_error
        self.entered: set[Path] = {self.real_root}

    def _inside_root(self, path: str) -> Path | None:
        """Resolved target of a link when it stays inside the root, else ``None``."""
        try:
            target = Path(path).resolve(strict=True)
        except (OSError, RuntimeError):  # dangling link or a loop of links
            return None
        return target if target.is_relative_to(self.real_root) else None

    def walk(self, folder: str, prefix: str) -> Iterator[Path]:
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda entry: entry.name)
        except OSError as exc:
            if self.on_error is not None:
                self.on_error(exc)
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            key = f"{prefix}{entry.name}"
            try:
                is_link = entry.is_symlink()
                is_dir = entry.is_dir(follow_symlinks=is_link and self.follow_symlinks)
                is_file = entry.is_file(follow_symlinks=is_link and self.follow_symlinks)
            except OSError as exc:
                if self.on_error is not None:
                    self.on_error(exc)
                continue
            if is_link and not self.follow_symlinks:
                continue
            if self.follow_symlinks:
                target = self._inside_root(entry.path)
                if target is None:
                    continue
                if is_dir:
                    if target in self.entered:  # already walked: a loop or a second way in
                        continue
                    self.entered.add(target)
            if is_dir:
                yield from self.walk(entry.path, f"{key}/")
            elif is_file and key not in self.seen and _is_image(entry.path, self.on_error):
                yield self.root / key


def scan_folder(
    root: Path,
    *,
    seen: Collection[str] | None = None,
    follow_symlinks: bool = False,
    on_error: ErrorHandler | None = None,
) -> Iterator[Path]:
    """Yield the image files under ``root``, recursively, in a fixed order.

    Order: entries sorted by name within each folder, depth first (so
    ``a/b.png`` before ``a/c/d.png`` before ``b.png``). ``seen`` holds keys
    already imported, as :func:`relative_key` makes them (``"a/b.png"``);
    those files are not yielded nor even opened, which makes refreshing a
    watched folder cheap. Yielded paths are ``root / key``, links not
    resolved. Unreadable folders and files are skipped; ``on_error`` (if
    given) is called with each :class:`OSError`, as with :func:`os.walk`.
    Raises :class:`NotADirectoryError` when ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    walker = _Walker(root, seen if seen is not None else frozenset(), follow_symlinks, on_error)
    yield from walker.walk(str(root), "")
