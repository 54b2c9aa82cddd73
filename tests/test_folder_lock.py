"""One run per folder (`mosaic_pretrain.folder_lock`): the lock's record, refusals naming the
holder, stale takeovers, other hosts, release however the work ends, and its users (`train`,
`check`, `convert`, `glue`, `ablate`)."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mosaic_pretrain import folder_lock
from mosaic_pretrain.errors import ConfigError, FolderInUseError, RunStopped
from mosaic_pretrain.folder_lock import LOCK_FILE, FolderLock, LockRules, own_record, process_start

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs" / "pretrain" / "smoke.yaml"
GLUE_SMOKE = ROOT / "configs" / "glue" / "smoke.yaml"
ABLATE = ROOT / "configs" / "pretrain" / "ablate-activations.yaml"
HOST = socket.gethostname()
# A child that takes the lock on argv[1], says so, and holds it until its stdin closes.
HOLD = """
import sys
from mosaic_pretrain.folder_lock import FolderLock, LockRules
with FolderLock(sys.argv[1], "folder " + sys.argv[1], "choose another", LockRules()):
    print("held", flush=True)
    sys.stdin.read()
"""
# A child that says it is ready, waits for argv[2] to exist, then tries the lock once: prints
# won (and holds it until argv[3] exists) or refused.
RACE = """
import os, sys, time
from mosaic_pretrain.errors import FolderInUseError
from mosaic_pretrain.folder_lock import FolderLock, LockRules
print("ready", flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.001)
try:
    lock = FolderLock(sys.argv[1], "folder", "choose another", LockRules()).acquire()
except FolderInUseError:
    print("refused", flush=True)
else:
    print("won", flush=True)
    while not os.path.exists(sys.argv[3]):
        time.sleep(0.01)
    lock.release()
"""


DEFAULT_RULES = LockRules()


def lock(folder: Path, rules: LockRules = DEFAULT_RULES, what: str = "save_folder X") -> FolderLock:
    return FolderLock(folder, what, "choose another save_folder", rules)


def child_env() -> dict:
    """The children import this checkout, as the test process does."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


@pytest.fixture
def live_holder(tmp_path):
    """Start a process holding the lock on a folder; yields (folder -> that process)."""
    started = []

    def hold(folder: Path) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(folder)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        started.append(process)
        assert process.stdout.readline().strip() == "held"
        return process

    yield hold
    for process in started:
        process.stdin.close()
        process.wait(timeout=30)


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_lock(folder: Path, **changes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    path.write_text(json.dumps({**own_record(), **changes}))
    return path


def age(path: Path, minutes: float) -> None:
    then = time.time() - minutes * 60
    os.utime(path, (then, then))


def test_the_lock_records_its_holder_and_goes_when_the_work_ends(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    with lock(folder):
        record = json.loads((folder / LOCK_FILE).read_text())
        assert record["host"] == HOST and record["pid"] == os.getpid()
        assert record["process_start"] == process_start(os.getpid())
        assert record["command"] == sys.argv and record["cwd"] == os.getcwd()
        assert record["since"].endswith("+00:00")
        assert os.listdir(folder) == [LOCK_FILE]  # no temporary file left beside it
    assert os.listdir(folder) == []


def test_a_second_run_is_refused_in_one_line_naming_the_holder(tmp_path, live_holder):
    folder = tmp_path / "run"
    holder = live_holder(folder)
    before = (folder / LOCK_FILE).read_bytes()
    with pytest.raises(FolderInUseError) as refused:
        lock(folder, what=f"save_folder {folder}").acquire()
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(
        f"save_folder {folder} is in use by another run: pid {holder.pid} on host {HOST} "
    )
    assert " since 20" in message and f"({folder / LOCK_FILE})" in message
    assert message.endswith("; wait for it to end, or choose another save_folder")
    assert (folder / LOCK_FILE).read_bytes() == before  # the holder's lock is untouched


def race(folder: Path, tmp_path: Path, racers: int = 6) -> list[str]:
    """`racers` processes try the lock at the same moment; what each got."""
    go, done = tmp_path / "go", tmp_path / "done"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", RACE, str(folder), str(go), str(done)],
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        for _ in range(racers)
    ]
    assert [process.stdout.readline().strip() for process in processes] == ["ready"] * racers
    go.touch()
    said = [process.stdout.readline().strip() for process in processes]
    done.touch()
    for process in processes:
        process.wait(timeout=30)
    return said


def test_of_runs_starting_together_exactly_one_gets_the_lock(tmp_path):
    said = race(tmp_path / "run", tmp_path)
    assert sorted(said) == ["refused"] * 5 + ["won"]


def test_of_runs_taking_over_one_stale_lock_together_exactly_one_wins(tmp_path):
    folder = tmp_path / "run"
    write_lock(folder, pid=dead_pid())
    said = race(folder, tmp_path)
    assert sorted(said) == ["refused"] * 5 + ["won"]
    assert os.listdir(folder) == []  # the winner released; nothing set aside is left


def test_a_dead_processs_lock_is_taken_over_with_a_warning(tmp_path, caplog):
    folder = tmp_path / "run"
    pid = dead_pid()
    write_lock(folder, pid=pid)
    with caplog.at_level(logging.WARNING, "mosaic_pretrain"), lock(folder):
        assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()
    [warning] = caplog.messages
    assert warning.startswith(f"save_folder X: took over the lock of pid {pid} on host {HOST}")
    assert warning.endswith(": that process is no longer running")


@pytest.mark.skipif(process_start(os.getpid()) is None, reason="no /proc to read start times")
def test_a_reused_pid_does_not_keep_a_lock(tmp_path, caplog):
    """The pid is alive (ours), but started later than the process that took the lock."""
    folder = tmp_path / "run"
    write_lock(folder, pid=os.getpid(), process_start=process_start(os.getpid()) - 1)
    with caplog.at_level(logging.WARNING, "mosaic_pretrain"), lock(folder):
        pass
    assert caplog.messages[0].endswith("(its pid now belongs to another process)")


@pytest.mark.skipif(not Path(folder_lock.BOOT_ID).exists(), reason="no boot id on this system")
def test_a_lock_of_this_host_from_before_a_restart_is_stale(tmp_path, caplog):
    folder = tmp_path / "run"
    write_lock(folder, boot_id="another-boot")
    with caplog.at_level(logging.WARNING, "mosaic_pretrain"), lock(folder):
        pass
    assert caplog.messages[0].endswith(f": host {HOST} has restarted since")


def test_another_hosts_lock_is_live_until_it_goes_unrefreshed_for_the_timeout(tmp_path, caplog):
    folder = tmp_path / "run"
    path = write_lock(folder, host="node-17")
    age(path, 9)
    with pytest.raises(FolderInUseError) as refused:
        lock(folder).acquire()
    message = str(refused.value)
    assert "pid" in message and "on host node-17" in message
    assert "on another host or container, whose process cannot be checked from here" in message
    assert (
        "counts as live until it goes 10 min without a refresh (last refresh 9 min ago; "
        "folder_lock.other_host_timeout_minutes)"
    ) in message
    assert message.endswith("or if it is certainly dead set folder_lock.take_over=true")
    age(path, 11)
    with caplog.at_level(logging.WARNING, "mosaic_pretrain"), lock(folder):
        pass
    assert caplog.messages[0].endswith(
        "not refreshed for 11 min, over the 10 min of folder_lock.other_host_timeout_minutes"
    )


def test_another_hosts_lock_never_times_out_with_no_timeout_but_may_be_taken_over(tmp_path, caplog):
    folder = tmp_path / "run"
    age(write_lock(folder, host="node-17"), 60 * 24 * 30)
    with pytest.raises(FolderInUseError, match="counts as live until taken over"):
        lock(folder, LockRules(other_host_timeout_minutes=None)).acquire()
    with caplog.at_level(logging.WARNING, "mosaic_pretrain"), lock(folder, LockRules(None, True)):
        pass
    assert caplog.messages[0].endswith(": as folder_lock.take_over=true says")


def test_take_over_never_frees_a_lock_whose_process_runs_on_this_host(tmp_path, live_holder):
    folder = tmp_path / "run"
    live_holder(folder)
    with pytest.raises(FolderInUseError, match="wait for it to end"):
        lock(folder, LockRules(take_over=True)).acquire()


@pytest.mark.skipif(folder_lock._pid_namespace() is None, reason="no pid namespaces here")
def test_another_pid_namespace_of_this_host_counts_as_another_host(tmp_path):
    """Another container with the same host name: its pids are not ours to check."""
    folder = tmp_path / "run"
    write_lock(folder, pid=dead_pid(), pid_namespace="pid:[1]")
    with pytest.raises(FolderInUseError, match="cannot be checked from here"):
        lock(folder).acquire()


def test_an_unreadable_lock_counts_as_live_until_the_timeout(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LOCK_FILE).write_text("{half a rec")
    with pytest.raises(FolderInUseError) as refused:
        lock(folder).acquire()
    assert f"in use by another run: an unreadable lock file ({folder / LOCK_FILE})" in str(
        refused.value
    )
    age(folder / LOCK_FILE, 11)
    with lock(folder):
        assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_a_timeout_under_two_minutes_is_refused():
    with pytest.raises(ConfigError) as refused:
        LockRules(other_host_timeout_minutes=1)
    assert str(refused.value) == (
        "folder_lock.other_host_timeout_minutes=1 is under 2 minutes: a live run refreshes its "
        "lock every 30 s, so from another host its lock would look abandoned; set 2 or more (or "
        "null: never)"
    )


def test_the_holder_keeps_its_lock_fresh(tmp_path, monkeypatch):
    monkeypatch.setattr(folder_lock, "REFRESH_SECONDS", 0.05)
    folder = tmp_path / "run"
    with lock(folder):
        age(folder / LOCK_FILE, 60)
        time.sleep(0.5)
        assert time.time() - (folder / LOCK_FILE).stat().st_mtime < 5


def test_release_never_removes_another_runs_lock(tmp_path, caplog):
    folder = tmp_path / "run"
    held = lock(folder).acquire()
    other = folder / "other"
    other.write_text(json.dumps({**own_record(), "host": "node-17"}))
    other.replace(folder / LOCK_FILE)  # taken over meanwhile (by an override elsewhere)
    with caplog.at_level(logging.WARNING, "mosaic_pretrain"):
        held.release()
    assert json.loads((folder / LOCK_FILE).read_text())["host"] == "node-17"
    assert caplog.messages == ["save_folder X: its lock was taken over meanwhile; left in place"]


def test_the_lock_goes_on_an_error_and_on_sigterm(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    with pytest.raises(ValueError), lock(folder):
        raise ValueError("a bug")
    assert not (folder / LOCK_FILE).exists()
    # Composer's import replaces SIGTERM's default with a sys.exit (an error, as above); where
    # nothing handles it, the lock's own handler stops the work.
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        stop_on_sigterm(folder)
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop_on_sigterm(folder: Path) -> None:
    with pytest.raises(RunStopped) as stopped, lock(folder):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises here
    assert stopped.value.exit_code == 143
    assert str(stopped.value) == "stopped by SIGTERM; save_folder X is free again"
    assert not (folder / LOCK_FILE).exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored


def test_a_waiting_lock_is_taken_once_the_holder_is_done(tmp_path, caplog):
    folder = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    assert holder.stdout.readline().strip() == "held"
    started = time.monotonic()
    threading.Timer(1.5, holder.stdin.close).start()  # the holder ends, releasing it
    with caplog.at_level(logging.INFO, "mosaic_pretrain"):
        waiting = FolderLock(folder, "folder", "choose another", LockRules(), wait=True)
        with waiting:
            assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()
    holder.wait(timeout=30)
    assert time.monotonic() - started > 1
    assert caplog.messages[0].startswith(
        f"waiting for the other run: folder is in use by another run: pid {holder.pid}"
    )


def test_folders_made_for_the_lock_go_with_it_when_nothing_was_written(tmp_path):
    with lock(tmp_path / "runs" / "x" / "ckpt"):
        pass
    assert os.listdir(tmp_path) == []
    with lock(tmp_path / "runs" / "y"):
        (tmp_path / "runs" / "y" / "metrics.jsonl").write_text("{}\n")
    assert os.listdir(tmp_path / "runs" / "y") == ["metrics.jsonl"]


def test_the_lock_file_is_invisible_to_what_reads_a_save_folder(tmp_path):
    from mosaic_pretrain.train.checkpoints import (
        checkpoints_by_batch,
        folder_checkpoint,
        repair_checkpoint_folder,
    )

    folder = tmp_path / "run"
    folder.mkdir()
    with lock(folder):
        assert checkpoints_by_batch(folder) == [] and folder_checkpoint(folder) is None
        repair = repair_checkpoint_folder(folder)
        assert repair.set_aside == [] and repair.resume_from is None
        assert os.listdir(folder) == [LOCK_FILE]


# Its users: every command that writes a folder takes its lock first.


def smoke(tmp_path: Path, *overrides: str):
    from mosaic_pretrain.config import load_config

    paths = [
        f"data_local={tmp_path}/no-data",
        f"save_folder={tmp_path}/ckpt",
        "export_folder=null",
        "model.model_config.num_hidden_layers=1",
    ]
    return load_config(SMOKE, [*paths, *overrides])


def test_train_refuses_a_folder_in_use_before_it_writes_anything(tmp_path, live_holder):
    from mosaic_pretrain.commands.train import train

    folder = tmp_path / "ckpt"
    holder = live_holder(folder)
    (folder / "ep0-ba4-rank0.pt").write_bytes(b"cut short")  # repair would set it aside
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    with pytest.raises(FolderInUseError, match=f"is in use by another run: pid {holder.pid} "):
        train(smoke(tmp_path, "autoresume=true"))
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before
    assert not (tmp_path / "no-data").exists()  # nor converted the corpus


def test_train_holds_its_lock_while_it_runs_and_releases_it_however_it_ends(tmp_path, monkeypatch):
    from mosaic_pretrain.commands import train as command

    config = smoke(tmp_path)
    seen = []

    def ending(outcome):
        def body(config):
            seen.append(json.loads((tmp_path / "ckpt" / LOCK_FILE).read_text())["pid"])
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome

        return body

    for outcome in ("a trainer", ConfigError("bad"), RunStopped("stopped by SIGTERM", 143)):
        monkeypatch.setattr(command, "_train", ending(outcome))
        if isinstance(outcome, BaseException):
            with pytest.raises(type(outcome)):
                command.train(config)
        else:
            assert command.train(config) == outcome
        assert not (tmp_path / "ckpt" / LOCK_FILE).exists()
    assert seen == [os.getpid()] * 3


# The command line, with a folder in use: refused before torch (and so Composer) is imported.
REFUSE_EARLY = """
import sys
from mosaic_pretrain.cli import main
code = main(sys.argv[1:])
print(sorted({"composer", "torch", "transformers", "streaming"} & set(sys.modules)))
sys.exit(code)
"""


@pytest.mark.parametrize("command", ["train", "ablate"])
def test_the_command_line_refuses_a_folder_in_use_before_importing_torch(
    tmp_path, live_holder, command
):
    if command == "train":
        recipe, folder = SMOKE, tmp_path / "ckpt"
        overrides = [f"data_local={tmp_path}/no-data", f"save_folder={folder}"]
    else:
        recipe, folder = ABLATE, tmp_path / "ablation"
        overrides = [f"data_local={tmp_path}/no-data", f"ablation.output_folder={folder}"]
    holder = live_holder(folder)
    done = subprocess.run(
        [sys.executable, "-c", REFUSE_EARLY, command, str(recipe), *overrides],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout.strip() == "[]"
    [line] = done.stderr.splitlines()
    assert f"{folder} is in use by another run: pid {holder.pid} " in line
    assert line.startswith(f"mosaic-pretrain {command}: error: ")
    assert os.listdir(folder) == [LOCK_FILE]


@pytest.mark.parametrize("rank", [0, 1])
def test_every_rank_raises_rank_zeros_refusal(tmp_path, live_holder, monkeypatch, rank):
    """Rank 0 takes the lock and broadcasts its verdict; the others raise it (none waits)."""
    from composer.utils import dist

    from mosaic_pretrain.train import folders

    holder = live_holder(tmp_path / "ckpt")
    broadcast = []

    def broadcast_object_list(objects, src):
        if rank == 0:
            broadcast.append(objects[0])
        else:
            objects[0] = "save_folder ... is in use by another run: pid 7 (what rank 0 said)"

    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "get_global_rank", lambda: rank)
    monkeypatch.setattr(dist, "initialize_dist", lambda device: None)
    monkeypatch.setattr(dist, "broadcast_object_list", broadcast_object_list)
    with pytest.raises(FolderInUseError) as refused, folders.hold_run_folder(smoke(tmp_path)):
        pass
    if rank == 0:
        assert broadcast == [str(refused.value)] and f"pid {holder.pid} " in broadcast[0]
    else:
        assert str(refused.value).endswith("(what rank 0 said)")


def test_check_reports_a_folder_held_by_a_live_run_and_takes_no_lock(tmp_path, live_holder):
    from mosaic_pretrain.cli import check_file

    holder = live_holder(tmp_path / "ckpt")
    before = (tmp_path / "ckpt" / LOCK_FILE).read_bytes()
    overrides = [f"data_local={tmp_path}/no-data", f"save_folder={tmp_path}/ckpt"]
    in_use = [problem for problem in check_file(SMOKE, overrides) if "in use" in problem]
    assert len(in_use) == 1, in_use
    assert in_use[0].startswith(
        f"save_folder {tmp_path}/ckpt is in use by another run: pid {holder.pid} on host {HOST} "
    )
    assert (tmp_path / "ckpt" / LOCK_FILE).read_bytes() == before
    timeout = check_file(SMOKE, [*overrides, "folder_lock.other_host_timeout_minutes=1"])
    assert any(
        p.startswith("folder_lock.other_host_timeout_minutes=1 is out of range") for p in timeout
    )


def test_check_reports_an_ablation_output_folder_in_use(tmp_path, live_holder):
    from mosaic_pretrain.cli import check_file

    holder = live_holder(tmp_path / "ablation")
    overrides = [f"ablation.output_folder={tmp_path}/ablation", f"data_local={tmp_path}/none"]
    problems = check_file(ABLATE, overrides)
    refusal = (
        f"ablation.output_folder {tmp_path}/ablation is in use by another run: pid {holder.pid} "
    )
    assert any(problem.startswith(refusal) for problem in problems), problems


def test_convert_refuses_an_output_folder_in_use_in_one_line(tmp_path, live_holder, capsys):
    from mosaic_pretrain.cli import main

    holder = live_holder(tmp_path / "mds")
    assert main(["convert", "--out", str(tmp_path / "mds"), "--max-documents", "5"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(
        f"mosaic-pretrain convert: error: conversion output {tmp_path}/mds is in use by another "
        f"run: pid {holder.pid} "
    )
    assert line.endswith("; wait for it to end, or choose another --out")
    assert os.listdir(tmp_path / "mds") == [LOCK_FILE]


def test_convert_take_over_lock_frees_another_hosts_lock(tmp_path, caplog):
    from mosaic_pretrain.data.convert import ConvertOptions, convert

    write_lock(tmp_path / "mds", host="node-17")
    with pytest.raises(FolderInUseError, match="if it is certainly dead set --take-over-lock"):
        convert(ConvertOptions(max_documents=5), tmp_path / "mds", progress=False)
    with caplog.at_level(logging.WARNING, "mosaic_pretrain"):
        convert(ConvertOptions(max_documents=5), tmp_path / "mds", progress=False,
                log=lambda line: None, take_over_lock=True)  # fmt: skip
    assert "as --take-over-lock says" in caplog.messages[0]
    assert sorted(os.listdir(tmp_path / "mds")) == ["conversion.json", "train"]


def test_a_glue_sweep_refuses_an_output_folder_in_use(tmp_path, live_holder):
    from mosaic_pretrain.cli import _sweep_problems
    from mosaic_pretrain.glue.config import load_sweep
    from mosaic_pretrain.glue.sweep import glue

    holder = live_holder(tmp_path / "glue")
    overrides = [f"output_folder={tmp_path}/glue"]
    with pytest.raises(FolderInUseError, match=f"output_folder {tmp_path}/glue is in use"):
        glue(load_sweep(GLUE_SMOKE, overrides))
    assert os.listdir(tmp_path / "glue") == [LOCK_FILE]
    assert any(f"pid {holder.pid} " in p for p in _sweep_problems(str(GLUE_SMOKE), overrides))
