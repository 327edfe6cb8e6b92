"""Where a study lives: Optuna storages for the search, and recovery of torn journal files.

The default storage is a JournalStorage file (safe for several local worker processes); any other URL goes to
Optuna's RDBStorage (``postgresql://...`` for many hosts; ``sqlite:///...`` for one process only). A journal record
cut short (power loss mid-append) is dropped when the journal is opened or appended to, with a
:class:`JournalRepairedWarning`; the dropped bytes are saved beside the journal (``study.journal.torn-<UTC time>``).
"""

from __future__ import annotations

import datetime
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import optuna

__all__ = ["DEFAULT_JOURNAL", "JournalRepairedWarning", "make_storage", "recover_journal", "is_journal"]

DEFAULT_JOURNAL = "study.journal"
MAX_RETRY = 3  # a trial whose worker died is re-run at most this many times (then it counts as failed)
_RECORD_START = b'{"op_code":'  # every Optuna journal record is one JSON object starting with this, one per line


class JournalRepairedWarning(UserWarning):
    """A journal file held a torn (incomplete) record; it was dropped and its bytes saved beside the journal."""


def _torn_path(path: Path, suffix: str = "") -> Path:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    candidate = path.with_name(f"{path.name}.torn-{stamp}{suffix}")
    k = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.torn-{stamp}{suffix}.{k}")
        k += 1
    return candidate


def _is_record(line: bytes) -> bool:
    """One complete journal record (without its newline)."""
    if line.startswith(_RECORD_START) and line.endswith(b"}") and line.count(_RECORD_START) == 1:
        return True  # the fast path: Optuna writes one JSON object per line starting with op_code
    try:
        return isinstance(json.loads(line), dict)
    except (ValueError, UnicodeDecodeError):
        return False


def _scan_journal(data: bytes) -> tuple[bytes, list[tuple[int, bytes]]]:
    """(the journal with every complete record, [(byte offset, dropped bytes)]).

    A torn record is an append cut short: its bytes lack the final newline. At the end of the file it is simply
    dropped; inside the file (a later append was written right after it, on the same line) the complete record
    that follows it on that line is kept and only the torn prefix is dropped."""
    kept, dropped, offset = bytearray(), [], 0
    for segment in data.splitlines(keepends=True):
        if segment.endswith(b"\n") and _is_record(segment.rstrip(b"\r\n")):
            kept += segment
        elif segment.endswith(b"\n"):
            body = segment.rstrip(b"\r\n")
            start = body.rfind(_RECORD_START)
            while start > 0 and not _is_record(body[start:]):
                start = body.rfind(_RECORD_START, 0, start)
            if start > 0:
                dropped.append((offset, segment[:start]))
                kept += segment[start:]
            elif body.strip(b"\x00 \t"):
                dropped.append((offset, segment))
            elif segment:  # an empty or zero-filled line carries nothing, but keep its bytes anyway
                dropped.append((offset, segment))
        else:
            dropped.append((offset, segment))
        offset += len(segment)
    return bytes(kept), dropped


def recover_journal(path: str | os.PathLike[str]) -> list[Path]:
    """Make a journal file readable again after a torn append; returns the files the dropped bytes were saved to.

    Every complete record is kept; each dropped fragment is saved, byte for byte, as ``<journal>.torn-<UTC time>``
    (``-<byte offset>`` appended when there are several) and a :class:`JournalRepairedWarning` says so. The file is
    only changed under the journal's own write lock, so a record another live worker is appending at this moment
    is never mistaken for a torn one."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return []
    if not _scan_journal(path.read_bytes())[1]:
        return []
    lock = optuna.storages.journal.JournalFileOpenLock(str(path))
    lock.acquire()
    try:
        data = path.read_bytes()
        kept, dropped = _scan_journal(data)
        if not dropped:
            return []
        saved = []
        for offset, fragment in dropped:
            target = _torn_path(path, f"-{offset}" if len(dropped) > 1 else "")
            target.write_bytes(fragment)
            saved.append(target)
        if len(dropped) == 1 and dropped[0][0] + len(dropped[0][1]) == len(data):
            os.truncate(path, dropped[0][0])  # only the tail: cut it off in place
        else:
            tmp = path.with_name(path.name + ".repair-tmp")
            with open(tmp, "wb") as f:
                f.write(kept)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    finally:
        lock.release()
    what = "; ".join(f"{len(b)} bytes at byte {o} -> {t}" for (o, b), t in zip(dropped, saved))
    warnings.warn(f"{path}: dropped {len(dropped)} torn journal record(s) (an append cut short, e.g. by a power "
                  f"loss or a killed machine); every complete record is kept; the dropped bytes are saved: {what}",
                  JournalRepairedWarning, stacklevel=2)
    return saved


class _RepairingJournalFileBackend(optuna.storages.journal.JournalFileBackend):
    """Optuna's journal file backend, but an append first drops a torn last record left by a writer that died
    mid-append (else the new record would be glued to it and the file would become unreadable)."""

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        payload = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode("utf-8")
        self._lock.acquire()
        try:
            with open(self._file_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                if size:
                    f.seek(size - 1)
                    torn = f.read(1) != b"\n"
                else:
                    torn = False
            if torn:  # we hold the writers' lock: nobody is writing, so an unterminated line is a dead append
                data = Path(self._file_path).read_bytes()
                cut = data.rfind(b"\n") + 1
                target = _torn_path(Path(self._file_path))
                target.write_bytes(data[cut:])
                os.truncate(self._file_path, cut)
                warnings.warn(f"{self._file_path}: dropped a torn last journal record ({len(data) - cut} bytes at "
                              f"byte {cut}, left by a writer that died mid-append); the bytes are saved in {target}",
                              JournalRepairedWarning, stacklevel=2)
            with open(self._file_path, "ab") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
        finally:
            self._lock.release()


def _with_installed_driver(url: str) -> str:
    """``postgresql://`` with the PostgreSQL driver that is installed: SQLAlchemy >= 2.1 means psycopg 3 by it,
    older versions psycopg2 (the ``postgres``/``test`` extras install psycopg2-binary)."""
    scheme, sep, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres"):
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2://{rest}"
    return f"postgresql://{rest}"


def make_storage(url: str | None, out_dir: str | os.PathLike[str], *, heartbeat_interval: int | None = None,
                 grace_period: int | None = None) -> optuna.storages.BaseStorage:
    """Optuna storage: ``None`` -> JournalStorage file ``OUT_DIR/study.journal`` (multi-process safe); a path ending
    in ``.journal`` -> that file; anything else is an RDB URL (``postgresql://USER:PW@HOST:PORT/DB``).

    A journal file is checked for torn records first (:func:`recover_journal`). For an RDB URL,
    ``heartbeat_interval`` (s) turns on Optuna's heartbeat: trials whose worker stopped beating for ``grace_period``
    s (default 2 x interval) are failed and re-enqueued (at most :data:`MAX_RETRY` times)."""
    if url is None or url.endswith(".journal"):
        path = Path(url) if url else Path(out_dir) / DEFAULT_JOURNAL
        path.parent.mkdir(parents=True, exist_ok=True)
        recover_journal(path)
        backend = _RepairingJournalFileBackend(
            str(path), lock_obj=optuna.storages.journal.JournalFileOpenLock(str(path)))
        return optuna.storages.JournalStorage(backend)
    if url.startswith("sqlite"):
        optuna.logging.get_logger("optuna").warning("SQLite storage is for a single process; use the journal "
                                                    "file (default) or PostgreSQL for several workers")
    if "://" not in url:
        raise ValueError(f"--storage {url!r} is neither a .journal file nor a database URL "
                         "(e.g. postgresql://USER:PASSWORD@HOST:5432/DB)")
    url = _with_installed_driver(url)
    kwargs: dict[str, Any] = {}
    if heartbeat_interval is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            kwargs = dict(heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                          heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                              max_retry=MAX_RETRY))
    import sqlalchemy.exc

    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, **kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # several hosts starting on an empty database race to create Optuna's tables; the loser retries
            # and then finds them
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def is_journal(storage: optuna.storages.BaseStorage) -> bool:
    return isinstance(storage, optuna.storages.JournalStorage) or isinstance(
        getattr(storage, "_backend", None), optuna.storages.JournalStorage)  # in case it is wrapped in a cache
