"""Crash-, full-disk- and concurrency-safe file writes, shared by every writer.

skxray writes four kinds of files that a later run reads back: saved models
(``config.json`` + ``model.safetensors``), training checkpoints (``last.pt``),
cached backbone features (``<sha1>.npy``) and reports (``report.html`` +
``metrics.json``). All of them go through :func:`atomic_write` or
:func:`atomic_write_many`, so that a write that fails part-way (a full disk,
an I/O error, a killed process) leaves either the complete new file or the
previous one, never half a file under the real name.

How: each file is written to a hidden temporary name in the same folder
(``.<name>.<pid>-<random>.tmp``, which no reader ever opens), flushed to disk
with ``fsync``, and only then renamed over the real name with
:func:`os.replace`, which is atomic on POSIX and Windows. The folder is
fsynced too, so that the rename itself survives a power cut. A failed write
removes its temporary file and raises :class:`OSError` naming the file and the
reason.

:func:`exclusive_lock` keeps two processes from writing the same folder at
once (e.g. two ``skxray train --out SAME_DIR``): the second gets a
:class:`FolderLockedError` instead of mixing its files with the first's.
"""

import contextlib
import os
import threading
import uuid
from pathlib import Path

__all__ = ["FolderLockedError", "atomic_write", "atomic_write_many", "exclusive_lock"]

LOCK_NAME = ".skxray.lock"


def _tmp_name(path):
    # The pid and a random part keep two writers (processes or threads) of the
    # same file from sharing a temporary file.
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def _fsync_file(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder):
    # Makes the renames durable; not possible on every platform (Windows
    # cannot open a folder), where os.replace is still atomic.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _named_error(path, exc, doing):
    """An OSError of the same errno whose message names ``path`` and the reason."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    err = OSError(exc.errno, f"Cannot {doing} '{path}': {reason}")
    err.filename = str(path)
    return err


def atomic_write_many(items):
    """Write several files so that each is either complete or unchanged.

    All the files are written to temporary names and flushed to disk first;
    only when every one of them has been written are they renamed into
    place, in the given order. A failure while writing (e.g. ``ENOSPC`` on
    the second file) therefore changes none of the real files.

    Parameters
    ----------
    items : sequence of (path, write)
        ``write(tmp_path)`` must write the whole content of ``path`` to the
        file ``tmp_path`` (a str in the same folder as ``path``).

    Raises
    ------
    OSError
        If a write, flush or rename fails; the message names the file and
        the reason (e.g. "No space left on device"), and ``errno`` is kept.
        Errors other than OSError raised by a writer are re-raised unchanged,
        after the temporary files are removed.
    """
    pending = []  # (tmp, final)
    try:
        for path, write in items:
            path = Path(path)
            tmp = _tmp_name(path)
            pending.append((tmp, path))
            try:
                write(str(tmp))
                if not tmp.exists():
                    raise OSError(0, "the writer produced no file")
                _fsync_file(tmp)
            except OSError as exc:
                raise _named_error(path, exc, "write") from exc
        folders = []
        for tmp, path in pending:
            try:
                os.replace(tmp, path)
            except OSError as exc:
                raise _named_error(path, exc, "replace") from exc
            if path.parent not in folders:
                folders.append(path.parent)
        for folder in folders:
            _fsync_dir(folder)
    finally:
        for tmp, _ in pending:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


def atomic_write(path, write):
    """Write one file by calling ``write(tmp_path)`` and renaming it into place.

    Readers see either the previous file or the complete new one, never a
    half-written one; see :func:`atomic_write_many`.

    Parameters
    ----------
    path : str or path-like
        The file to (over)write. Its folder must exist.
    write : callable
        ``write(tmp_path)`` writes the whole content to the file ``tmp_path``.

    Raises
    ------
    OSError
        If writing fails; the message names ``path`` and the reason.
    """
    atomic_write_many([(path, write)])


class FolderLockedError(RuntimeError):
    """Another process is writing the same folder.

    Parameters
    ----------
    folder : str or path-like
        The folder.
    owner : str
        What the lock file says about its holder (its pid), or "".
    """

    def __init__(self, folder, owner=""):
        self.folder = os.fspath(folder)
        self.owner = owner
        who = f"another process ({owner})" if owner else "another process"
        super().__init__(
            f"Cannot write to '{self.folder}': {who} is writing a model there right now. "
            "Wait for it to finish or choose another folder."
        )


# Locks this process holds, by folder: flock() locks belong to an open file,
# so the same process opening the lock file again would lock itself out.
_HELD = {}
_HELD_GUARD = threading.Lock()


@contextlib.contextmanager
def exclusive_lock(folder):
    """Hold an exclusive, non-blocking lock on ``folder`` for a ``with`` block.

    The lock is an ``flock`` on ``<folder>/.skxray.lock``: the kernel
    releases it when the holder exits, even when killed, so a crashed run
    never leaves a stale lock behind. The same process may nest it.

    Parameters
    ----------
    folder : str or path-like
        The folder to lock (created if needed).

    Raises
    ------
    FolderLockedError
        If another process holds the lock.
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(folder)
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is not None:
            held[1] += 1
    if held is not None:
        try:
            yield
        finally:
            with _HELD_GUARD:
                held[1] -= 1
        return
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; writes stay atomic
        yield
        return
    lock_path = folder / LOCK_NAME
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = ""
            with contextlib.suppress(OSError):
                owner = os.pread(fd, 100, 0).decode("ascii", "replace").strip()
            raise FolderLockedError(folder, owner) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        entry = [fd, 1]
        with _HELD_GUARD:
            _HELD[key] = entry
        try:
            yield
        finally:
            with _HELD_GUARD:
                _HELD.pop(key, None)
    finally:
        # A folder this call created and nothing else filled (e.g. training
        # failed before saving) is removed again, lock file included.
        # Otherwise the lock file stays: removing it could let two processes
        # lock two different inodes of the same name.
        if created:
            with contextlib.suppress(OSError):
                if os.listdir(folder) == [LOCK_NAME]:
                    lock_path.unlink()
                    folder.rmdir()
        # Closing the descriptor releases the flock.
        os.close(fd)
