"""One run per folder: the lock a command holds on the folder it writes (a training run's save
folder, an ablation's or a GLUE sweep's output folder, a conversion's output).

The lock is the file `FOLDER/mosaic-pretrain.lock`, a JSON record of who holds it: host, pid,
the process's start time, user, command, working directory and since when. It is written under
a temporary name and hard-linked to its own name, which fails when that name exists: of two
runs starting together exactly one gets it, and no reader ever sees half a record. The holder
removes it when it ends in any way it sees (return, error, SIGTERM, Ctrl-C) and, meanwhile, a
thread refreshes its modification time every REFRESH_SECONDS.

A lock found in the folder is judged:
- this host, its process running (same pid, same start time): live, and the new run is refused;
- this host, its process gone, its pid now another process's, or the host restarted since (its
  boot id changed): stale, left by a kill or a crash, and taken over with a warning;
- another host (or another pid namespace of this host, i.e. another container), or a record
  that cannot be read: its process cannot be checked from here, so it counts as live until it
  has gone `other_host_timeout_minutes` without a refresh, or the user says to take it over.

A takeover cannot be won twice: the stale file is renamed aside (a file can be renamed away from
its name only once) and checked to be the one judged before the new lock is linked in.
"""

import contextlib
import datetime
import errno
import getpass
import json
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from mosaic_pretrain.errors import ConfigError, FolderInUseError, RunStopped

logger = logging.getLogger(__name__)

LOCK_FILE = "mosaic-pretrain.lock"
REFRESH_SECONDS = 30.0
# Four refreshes: under this, a live holder's lock could look abandoned from another host.
MIN_TIMEOUT_MINUTES = 2.0
WAIT_POLL_SECONDS = 1.0
BOOT_ID = "/proc/sys/kernel/random/boot_id"
# Hard links unsupported here (some network and FUSE file systems): create with O_EXCL instead.
NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}
QUICK_RETRIES = 50  # a lock that vanishes or changes under us this often is not a race


@dataclass(frozen=True)
class LockRules:
    """How a lock of another host is judged, and the names the user sets that by (a recipe key,
    a command-line option), for the messages."""

    other_host_timeout_minutes: float | None = 10.0  # None: never times out
    take_over: bool = False  # take over another host's (or an unreadable) lock now
    timeout_name: str | None = "folder_lock.other_host_timeout_minutes"
    take_over_name: str = "folder_lock.take_over=true"

    def __post_init__(self) -> None:
        minutes = self.other_host_timeout_minutes
        if minutes is not None and minutes < MIN_TIMEOUT_MINUTES:
            raise ConfigError(
                f"{self.timeout_name or 'the lock timeout'}={minutes:g} is under "
                f"{MIN_TIMEOUT_MINUTES:g} minutes: a live run refreshes its lock every "
                f"{REFRESH_SECONDS:g} s, so from another host its lock would look abandoned; set "
                f"{MIN_TIMEOUT_MINUTES:g} or more (or null: never)"
            )


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 on (the name in field 2 may hold spaces and parentheses)."""
    stat = _read_text(f"/proc/{pid}/stat")
    return stat.rpartition(")")[2].split() if stat else None


def process_start(pid: int) -> int | None:
    """When the process started, in clock ticks since boot (field 22 of /proc/PID/stat); with
    the pid it names one process, since a reused pid has a later start. None off Linux."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return str(os.getuid())


def own_record() -> dict:
    """This process as a lock's holder."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "process_start": process_start(os.getpid()),
        "boot_id": _read_text(BOOT_ID),
        "pid_namespace": _pid_namespace(),
        "user": _user(),
        "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "cwd": os.getcwd(),
    }


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


@dataclass(frozen=True)
class FoundLock:
    """A lock file as read: its record (None when unreadable), bytes, inode and age."""

    path: Path
    record: dict | None
    raw: bytes
    inode: int
    refreshed_seconds_ago: float

    def owner(self) -> str:
        """Who holds it, for a message: pid, host, user, since when, and the file."""
        if self.record is None:
            return f"an unreadable lock file ({self.path})"
        record = self.record
        since = record.get("since", "?")
        try:
            started = datetime.datetime.fromisoformat(since)
            now = datetime.datetime.now(datetime.timezone.utc)
            since = f"{since}, {_duration(max(0.0, (now - started).total_seconds()))} ago"
        except (TypeError, ValueError):
            pass
        return (
            f"pid {record['pid']} on host {record['host']} (user {record.get('user', '?')}) "
            f"since {since} ({self.path})"
        )


def _valid(record: object) -> bool:
    return (
        isinstance(record, dict)
        and isinstance(record.get("host"), str)
        and isinstance(record.get("pid"), int)
        and record["pid"] > 0  # os.kill(0 or a negative pid) would signal process groups
    )


def read_lock(path: Path) -> FoundLock | None:
    """The lock at `path`, or None when there is none."""
    try:
        with open(path, "rb") as handle:
            stat = os.fstat(handle.fileno())
            raw = handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        record = None
    age = max(0.0, time.time() - stat.st_mtime)
    return FoundLock(path, record if _valid(record) else None, raw, stat.st_ino, age)


def _not_running(pid: int, start: int | None) -> str | None:
    """Why the process of this host that took the lock is gone; None while it runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "is no longer running"
    except PermissionError:
        pass  # another user's process: it exists
    fields = _stat_fields(pid)
    if fields is not None and start is not None and int(fields[19]) != start:
        return "is no longer running (its pid now belongs to another process)"
    if fields is not None and fields[0] == "Z":
        return "is no longer running (it has exited; only its zombie is left)"
    return None


@dataclass(frozen=True)
class Verdict:
    live: bool
    checked: bool  # its process was looked at on this host (else another host's, or unreadable)
    why: str  # why it is stale, for the takeover warning


def judge(found: FoundLock, rules: LockRules) -> Verdict:
    """Whether the lock still holds the folder (see the module's docstring for the rules)."""
    record = found.record
    here = record is not None and record["host"] == socket.gethostname()
    boot_id, namespace = _read_text(BOOT_ID), _pid_namespace()
    if here and None not in (record.get("boot_id"), boot_id) and record["boot_id"] != boot_id:
        return Verdict(False, True, f"host {record['host']} has restarted since")
    if here and None not in (record.get("pid_namespace"), namespace):
        here = record["pid_namespace"] == namespace  # another container: not checkable
    if here:
        gone = _not_running(record["pid"], record.get("process_start"))
        return Verdict(gone is None, True, f"that process {gone}" if gone else "")
    if rules.take_over:
        return Verdict(False, False, f"as {rules.take_over_name} says")
    timeout = rules.other_host_timeout_minutes
    age = found.refreshed_seconds_ago
    if timeout is not None and age > timeout * 60:
        named = f" of {rules.timeout_name}" if rules.timeout_name else ""
        return Verdict(
            False, False, f"not refreshed for {_duration(age)}, over the {timeout:g} min{named}"
        )
    return Verdict(True, False, "")


def in_use_message(
    found: FoundLock, checked: bool, what: str, instead: str, rules: LockRules
) -> str:
    """The one line a run is refused with: the folder, who holds it, and what to do."""
    owner = found.owner()
    if checked:
        return f"{what} is in use by another run: {owner}; wait for it to end, or {instead}"
    minutes = rules.other_host_timeout_minutes
    named = f"; {rules.timeout_name}" if rules.timeout_name else ""
    until = f"until it goes {minutes:g} min without a refresh" if minutes else "until taken over"
    where = "on another host or container, whose" if found.record is not None else "whose"
    return (
        f"{what} is in use by another run: {owner}, {where} process cannot be checked from "
        f"here: the lock counts as live {until} (last refresh "
        f"{_duration(found.refreshed_seconds_ago)} ago{named}); wait for that run to end, "
        f"{instead}, or if it is certainly dead set {rules.take_over_name}"
    )


def lock_problem(folder: Path, what: str, instead: str, rules: LockRules) -> str | None:
    """The refusal a run into `folder` would get now, or None (no lock, or a stale one). Reads
    only: `mosaic-pretrain check` reports it."""
    found = read_lock(Path(folder) / LOCK_FILE)
    if found is None:
        return None
    verdict = judge(found, rules)
    return in_use_message(found, verdict.checked, what, instead, rules) if verdict.live else None


def _write_new(path: Path, data: bytes) -> None:
    with open(path, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems refuse fsync on a directory
    finally:
        os.close(descriptor)


class FolderLock:
    """`with FolderLock(folder, what, instead, rules):` the work that writes into `folder`.

    `what` names the folder in messages ("save_folder runs/x"), `instead` is the other way out
    ("choose another save_folder"). With `wait`, a live lock is waited for (polled every
    second) instead of refused: for work that is the same whoever does it (converting the
    shipped corpus), which the second comer then finds done.
    """

    def __init__(self, folder: Path, what: str, instead: str, rules: LockRules, wait: bool = False):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.what, self.instead, self.rules, self.wait = what, instead, rules, wait
        self.record: dict | None = None
        self._inode: int | None = None
        self._descriptor: int | None = None
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None
        self._sigterm_installed = False
        self._created: list[Path] = []

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()

    def acquire(self) -> "FolderLock":
        """Take the lock, taking over a stale one; FolderInUseError when another run holds it."""
        self._created = []
        self._make_folder()
        record = own_record()
        data = (json.dumps(record, indent=2) + "\n").encode()
        said_waiting = False
        retries = 0
        while not self._create(data):
            found = read_lock(self.path)
            if found is None:  # released between our attempt and the read
                retries += 1
            else:
                verdict = judge(found, self.rules)
                if not verdict.live:
                    if self._take_over(found, data):
                        logger.warning(
                            "%s: took over the lock of %s: %s",
                            self.what,
                            found.owner(),
                            verdict.why,
                        )
                        break
                    retries += 1
                elif self.wait:
                    if not said_waiting:
                        logger.info("waiting for the other run: %s", self._refusal(found, verdict))
                        said_waiting = True
                    time.sleep(WAIT_POLL_SECONDS)
                else:
                    raise FolderInUseError(self._refusal(found, verdict))
            if retries > QUICK_RETRIES:
                raise FolderInUseError(
                    f"{self.what}: its lock file {self.path} keeps changing (another program "
                    f"is writing it); {self.instead}"
                )
        self.record = record
        self._hold()
        return self

    def problem(self) -> str | None:
        """The refusal `acquire` would raise now, or None; takes nothing (for `check`)."""
        return lock_problem(self.folder, self.what, self.instead, self.rules)

    def _refusal(self, found: FoundLock, verdict: Verdict) -> str:
        return in_use_message(found, verdict.checked, self.what, self.instead, self.rules)

    def _make_folder(self) -> None:
        """The folder, noting those made for the lock (removed at release if left empty)."""
        missing = self.folder
        while not missing.exists() and missing != missing.parent:
            if missing not in self._created:
                self._created.append(missing)
            missing = missing.parent
        self._created.sort(key=lambda folder: len(folder.parts), reverse=True)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(
                f"{self.what} cannot be created ({error.strerror}); {self.instead}"
            ) from None

    def _create(self, data: bytes) -> bool:
        """Create the lock file with its whole record, unless one exists (then False)."""
        temporary = self.folder / f".{LOCK_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            try:
                _write_new(temporary, data)
            except FileNotFoundError:  # removed, empty, by a holder that has just ended
                self._make_folder()
                _write_new(temporary, data)
            try:
                os.link(temporary, self.path)
            except FileExistsError:
                return False
            except OSError as error:
                if error.errno not in NO_LINKS:
                    raise
                return self._create_exclusive(data)
        except OSError as error:
            raise ConfigError(
                f"{self.what}: cannot write its lock file {self.path} ({error.strerror}); "
                f"{self.instead}"
            ) from None
        finally:
            temporary.unlink(missing_ok=True)
        _fsync_folder(self.folder)
        return True

    def _create_exclusive(self, data: bytes) -> bool:
        try:
            descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(descriptor, data)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        return True

    def _take_over(self, found: FoundLock, data: bytes) -> bool:
        """Replace the stale lock `found` by ours; False when it changed meanwhile (judge again).

        Renaming moves whatever file has the lock's name, so the file moved aside is compared
        with the one judged (inode and bytes: a new lock may reuse a freed inode). Another taker
        may have been faster: then its live lock was moved, and is put back at once."""
        aside = self.folder / f".{LOCK_FILE}.{os.getpid()}.{secrets.token_hex(4)}.stale"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        moved = read_lock(aside)
        if moved is None or moved.inode != found.inode or moved.raw != found.raw:
            try:
                os.link(aside, self.path)
            except FileExistsError:
                logger.warning(
                    "%s: a lock taken over at the same moment as ours was displaced (%s)",
                    self.what,
                    aside,
                )
                return False
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        return self._create(data)

    def _hold(self) -> None:
        """Keep the lock fresh, and release it on SIGTERM outside code that handles it."""
        descriptor = os.open(self.path, os.O_RDONLY)
        self._descriptor = descriptor
        self._inode = os.fstat(descriptor).st_ino
        self._stop.clear()
        self._refresher = threading.Thread(
            target=self._refresh, name="folder-lock-refresh", daemon=True
        )
        self._refresher.start()
        in_main_thread = threading.current_thread() is threading.main_thread()
        if in_main_thread and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, self._on_sigterm)
            self._sigterm_installed = True

    def _remove_created(self) -> None:
        """A run that wrote nothing (refused by a check, say) leaves no folder behind."""
        for folder in self._created:  # the deepest first; rmdir refuses a folder not empty
            try:
                folder.rmdir()
            except OSError:
                return

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH_SECONDS):
            if not self.is_ours():
                logger.warning(
                    "%s: the lock file %s is no longer this run's; another run may write here",
                    self.what,
                    self.path,
                )
                return
            with contextlib.suppress(OSError):  # refreshed at the next tick
                os.utime(self._descriptor if os.utime in os.supports_fd else self.path)

    def is_ours(self) -> bool:
        """Whether the file under the lock's name is still the one this object created."""
        try:
            return self._inode is not None and os.stat(self.path).st_ino == self._inode
        except OSError:
            return False

    def _on_sigterm(self, signum: int, frame) -> None:
        if self.record is None or os.getpid() != self.record["pid"]:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked child: end as SIGTERM ends
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise RunStopped(f"stopped by SIGTERM; {self.what} is free again", 128 + signal.SIGTERM)

    def release(self) -> None:
        """Remove the lock if it is still ours (never another run's), and stop refreshing it."""
        if self.record is None:
            return
        self._stop.set()
        if self._refresher is not None and self._refresher is not threading.current_thread():
            self._refresher.join(timeout=5)
        if self._sigterm_installed and threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
            self._sigterm_installed = False
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None
        # A forked child (a data or tokenizing worker) never removes its parent's lock.
        if os.getpid() == self.record["pid"]:
            if self.is_ours():
                self.path.unlink(missing_ok=True)
                self._remove_created()
            else:
                logger.warning("%s: its lock was taken over meanwhile; left in place", self.what)
        self.record = None
        self._inode = None
