"""The compile cache: an in-memory LRU of compiled constraints, backed by pickles on disk.

Key = sha256(kind, canonical constraint, options, tokenizer fingerprint, structgen version, compiler source
fingerprint, file format).
On disk (`settings.cache_dir()/fsm/<key>.pkl`, off with STRUCTGEN_DISABLE_DISK_CACHE) each entry holds the
automaton and every table and mask built so far, so a restart reuses them and a hit costs milliseconds.
Entries are written atomically (temp file + rename); an unreadable or mismatched file is ignored and rewritten.
Failures (ConstraintError) are cached in memory so the same bad constraint fails fast; a limit failure
(ConstraintTooComplexError: states, time, memory, table bytes, or the time a request's deadline left) only while the
caller's CompileLimits allow no more than the ones it failed under. Memory holds at most `capacity` entries and
`max_bytes` of tables (STRUCTGEN_COMPILE_CACHE_MB), least recently used out first. Limits are not in
the key: they decide whether a compile succeeds, not what it produces (a `max_states` schema option is, as an option).

NOTE: the disk files are pickles: the cache folder must be as trusted as the code (it is the user's own).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import pickle
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Protocol

from .. import __version__, settings
from ..errors import CompileDeadlineError, ConstraintError, ConstraintTooComplexError
from .limits import CompileLimits

log = logging.getLogger(__name__)

# Bump when the pickled layout changes: older files are then ignored and rewritten.
FORMAT_VERSION = 1
MEMORY_CAPACITY = 256
# Most entry files kept on disk (each is tens of KB to a few MB); the oldest written are removed first.
MAX_DISK_ENTRIES = 2000

MEMORY, DISK, MISS = "memory", "disk", "miss"


class Cacheable(Protocol):
    key: str

    def snapshot(self) -> dict: ...

    @property
    def version(self) -> int: ...


def _code_fingerprint() -> str:
    """sha256 over the compiler's own source files.

    NOTE: pickled automata embed the compiler's classes, and their semantics change with the code; keying on
    the source means an edited or upgraded compiler never reuses a stale entry, even at the same version.
    """
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


CODE_FINGERPRINT = _code_fingerprint()


def make_key(kind: str, canonical: str, options: dict, fingerprint: str) -> str:
    """The cache key of one constraint for one tokenizer (hex sha256)."""
    try:
        opts = json.dumps(options, sort_keys=True, separators=(",", ":"))
    except TypeError as e:
        raise TypeError(f"constraint options must be JSON values: {e}") from None
    blob = json.dumps([FORMAT_VERSION, __version__, CODE_FINGERPRINT, kind, canonical, opts, fingerprint],
                      ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class CompileCache:
    """Thread-safe LRU + disk cache. `disk_dir=None` means `settings.cache_dir()/fsm`, read at each use."""

    def __init__(self, capacity: int = MEMORY_CAPACITY, disk_dir: Path | None = None, max_bytes: int | None = None):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        # NOTE: a byte budget as well as an entry count: one hostile schema's tables can outweigh 255 ordinary ones.
        self.max_bytes = settings.get("STRUCTGEN_COMPILE_CACHE_MB") << 20 if max_bytes is None else int(max_bytes)
        if self.max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {self.max_bytes}")
        self._disk_dir = disk_dir
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, object] = OrderedDict()  # key -> compiled | _Failure
        self._key_locks: dict[str, threading.Lock] = {}
        self._saved_version: dict[str, int] = {}  # key -> index version last written to disk
        self._unpicklable_warned = False

    # ---- lookup ------------------------------------------------------------------------------------------

    def get_or_compile(self, key: str, build: Callable[[], Cacheable], restore: Callable[[dict], Cacheable],
                       limits: CompileLimits | None = None, deadline: float | None = None) -> tuple[Cacheable, str]:
        """The compiled constraint for `key` and where it came from: "memory", "disk" or "miss".

        `build()` compiles under `limits` (may raise ConstraintError, which is remembered with them);
        `restore(payload)` rebuilds an object from a disk payload (any exception = unusable file). Concurrent
        callers of one key wait for a single compile, each no longer than its `deadline` (time.monotonic(); None =
        no deadline): past it, CompileDeadlineError. limits: None = CompileLimits.from_env().
        """
        if limits is None:
            limits = CompileLimits.from_env()
        hit = self.lookup_memory(key, limits, deadline)
        if hit is not None:
            return hit, MEMORY
        lock = self._key_lock(key)
        wait_s = -1 if deadline is None else max(deadline - time.monotonic(), 0.0)
        if not lock.acquire(timeout=wait_s):
            raise CompileDeadlineError(0.0, ran=False)  # another request is compiling the same constraint
        try:
            hit = self.lookup_memory(key, limits, deadline)
            if hit is not None:
                return hit, MEMORY
            obj = self._disk_get(key, restore)
            if obj is not None:
                self._memory_put(key, obj)
                self._saved_version[key] = obj.version
                return obj, DISK
            try:
                obj = build()
            except CompileDeadlineError as e:
                if e.ran:  # what ran out of time fails as fast again under no more time; a wait proves nothing
                    self._memory_put(key, _Failure(e, limits.with_timeout(e.timeout_s)))
                raise
            except ConstraintError as e:
                self._memory_put(key, _Failure(e, limits))
                raise
            self._memory_put(key, obj)
            self.save(obj)
            return obj, MISS
        finally:
            lock.release()

    def lookup_memory(self, key: str, limits: CompileLimits | None = None, deadline: float | None = None):
        """The in-memory entry for `key` (marked recently used), None if absent. A cached failure is raised, unless
        it was a limit failure and `limits` (None = CompileLimits.from_env()), shortened to the time left before
        `deadline`, allow more than the limits it failed under."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if isinstance(entry, _Failure):
                asked = limits if limits is not None else CompileLimits.from_env()
                if deadline is not None:
                    asked = asked.with_timeout(deadline - time.monotonic())
                if not entry.still_applies(asked):
                    del self._entries[key]
                    return None
                self._entries.move_to_end(key)
                raise entry.error.with_traceback(None)
            self._entries.move_to_end(key)
            return entry

    def _memory_put(self, key: str, entry) -> None:
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
        self.trim()

    def trim(self) -> int:
        """Drop least recently used entries until both the entry count and the byte budget hold (the newest entry
        always stays). Entries grow while decoding reaches new states, so a server calls this periodically too.
        Returns how many entries left memory (what they learned is saved to disk first)."""
        evicted = []
        with self._lock:
            total = sum(_entry_bytes(e) for e in self._entries.values())
            while len(self._entries) > 1 and (len(self._entries) > self.capacity or total > self.max_bytes):
                old = self._entries.popitem(last=False)[1]
                total -= _entry_bytes(old)
                evicted.append(old)
        for old in evicted:
            if not isinstance(old, _Failure):
                self.save(old)  # keep what it learned before it leaves memory (outside the lock: pickling)
            self._saved_version.pop(getattr(old, "key", None), None)
        return len(evicted)

    def nbytes(self) -> int:
        """Bytes held by the in-memory entries (their tables and masks, as each reports them)."""
        with self._lock:
            return sum(_entry_bytes(e) for e in self._entries.values())

    def _key_lock(self, key: str) -> threading.Lock:
        with self._lock:
            lock = self._key_locks.get(key)
            if lock is None:
                if len(self._key_locks) > 4 * self.capacity:
                    # Drop idle locks so the table stays bounded.
                    self._key_locks = {k: v for k, v in self._key_locks.items() if v.locked()}
                lock = self._key_locks[key] = threading.Lock()
            return lock

    def clear(self, disk: bool = False) -> None:
        """Forget every in-memory entry (and, with disk=True, every file of this cache's folder)."""
        with self._lock:
            self._entries.clear()
            self._saved_version.clear()
        if disk and self.disk_dir() is not None:
            for f in self.disk_dir().glob("*.pkl"):
                f.unlink(missing_ok=True)

    def __len__(self) -> int:
        return len(self._entries)

    # ---- disk --------------------------------------------------------------------------------------------

    def disk_dir(self) -> Path | None:
        """The folder of this cache's files, or None while the disk cache is disabled."""
        if settings.get("STRUCTGEN_DISABLE_DISK_CACHE"):
            return None
        d = self._disk_dir if self._disk_dir is not None else settings.cache_dir() / "fsm"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def path_for(self, key: str) -> Path | None:
        d = self.disk_dir()
        return None if d is None else d / f"{key}.pkl"

    def _disk_get(self, key: str, restore: Callable[[dict], Cacheable]):
        path = self.path_for(key)
        if path is None or not path.is_file():
            return None
        try:
            with open(path, "rb") as fh:
                blob = pickle.load(fh)
            if not (isinstance(blob, dict) and blob.get("format") == FORMAT_VERSION
                    and blob.get("structgen") == __version__ and blob.get("key") == key):
                raise ValueError("format, version or key mismatch")
            return restore(blob["payload"])
        except Exception as e:  # noqa: BLE001 - any unreadable file is only a miss; it is rewritten
            log.warning("ignoring unusable FSM cache file %s (%s: %s)", path, type(e).__name__, e)
            return None

    def save(self, obj: Cacheable) -> bool:
        """Write `obj` to disk if it grew since its last write. True if a file was written."""
        path = self.path_for(obj.key)
        if path is None:
            return False
        version = obj.version
        if self._saved_version.get(obj.key) == version and path.is_file():
            return False
        blob = {"format": FORMAT_VERSION, "structgen": __version__, "key": obj.key, "payload": obj.snapshot()}
        try:
            data = pickle.dumps(blob, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as e:
            if not self._unpicklable_warned:
                log.warning("compiled constraint cannot be pickled, disk cache skipped (%s)", e)
                self._unpicklable_warned = True
            return False
        is_new = not path.exists()
        if not write_atomic(path, data):
            return False
        self._saved_version[obj.key] = version
        if is_new:
            self._prune(path.parent)
        return True

    def save_dirty(self) -> int:
        """Persist every in-memory constraint that grew since it was written (call periodically / at exit)."""
        with self._lock:
            objs = [e for e in self._entries.values() if not isinstance(e, _Failure)]
        return sum(self.save(o) for o in objs)

    def start_autosave(self, interval_s: float = 60.0) -> threading.Event:
        """Run save_dirty() every `interval_s` seconds in a daemon thread (a server calls this once).

        Returns an Event; set it to stop the thread. States reached while decoding then survive a restart.
        """
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        stop = threading.Event()

        def loop():
            while not stop.wait(interval_s):
                try:
                    self.trim()
                    self.save_dirty()
                except Exception as e:  # noqa: BLE001 - a failed write must not kill the saver
                    log.warning("periodic FSM cache save failed: %s", e)

        threading.Thread(target=loop, name="structgen-fsm-autosave", daemon=True).start()
        return stop

    def _prune(self, folder: Path) -> None:
        """Keep the folder to MAX_DISK_ENTRIES files: the least recently written go first."""
        files = list(folder.glob("*.pkl"))
        if len(files) <= MAX_DISK_ENTRIES:
            return
        files.sort(key=lambda f: f.stat().st_mtime if f.exists() else 0.0)
        for f in files[: len(files) - MAX_DISK_ENTRIES]:
            if not f.name.startswith("vocab-"):
                f.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes) -> bool:
    """Write `data` to `path` so readers see the old file or the new one, never half of one."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    except OSError as e:
        log.warning("could not write cache file %s: %s", path, e)
        return False
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
        return True
    except OSError as e:
        log.warning("could not write cache file %s: %s", path, e)
        Path(tmp).unlink(missing_ok=True)
        return False


def _entry_bytes(entry) -> int:
    return 256 if isinstance(entry, _Failure) else int(getattr(entry, "nbytes", 0))


class _Failure:
    """A remembered compile error. Limit errors are forgotten once a limit is raised past the one it failed under."""

    __slots__ = ("error", "limits")

    def __init__(self, error: ConstraintError, limits: CompileLimits):
        self.error = error
        self.limits = limits

    def still_applies(self, limits: CompileLimits) -> bool:
        return not isinstance(self.error, ConstraintTooComplexError) or self.limits.covers(limits)


_DEFAULT: CompileCache | None = None
_DEFAULT_LOCK = threading.Lock()


def default_cache() -> CompileCache:
    """The process-wide cache used by structgen.compile_*."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = CompileCache()
            atexit.register(_save_at_exit)
        return _DEFAULT


def _save_at_exit() -> None:
    if _DEFAULT is not None:
        try:
            _DEFAULT.save_dirty()
        except Exception as e:  # noqa: BLE001 - never fail interpreter shutdown over a cache write
            log.warning("saving the FSM cache at exit failed: %s", e)
