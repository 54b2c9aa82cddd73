"""Training as separate processes: through Composer's launcher on two CPU ranks (gloo), runs
killed with SIGKILL (at seeded moments: in a step, while a checkpoint is written, right after
one, in an evaluation) then continued by autoresume, a second run refused a folder in use, and
the ranks' shared verdict when a NaN or a SIGTERM reaches only one of two ranks."""

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mosaic_pretrain.folder_lock import LOCK_FILE
from mosaic_pretrain.train.checkpoints import is_complete
from mosaic_pretrain.train.export import load_composer_weights

pytestmark = pytest.mark.slow  # end-to-end runs; `pytest -m 'not slow'` skips them

SMOKE = Path(__file__).resolve().parent.parent / "configs" / "pretrain" / "smoke.yaml"
LAUNCHER = Path(sys.executable).parent / "composer"
QUICK = [
    "model.model_config.num_hidden_layers=1",
    "global_train_batch_size=8",
    "log_to_console=false",
    "export_folder=null",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from mosaic_pretrain.data.convert import ConvertOptions, convert
    from mosaic_pretrain.train.builders import BUILTIN_VAL_FRACTION

    folder = tmp_path_factory.mktemp("data") / "public-domain-en"
    convert(
        ConvertOptions(val_fraction=BUILTIN_VAL_FRACTION),
        folder,
        progress=False,
        log=lambda line: None,
    )
    return folder


def train_command(corpus, save_folder, *overrides) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mosaic_pretrain",
        "train",
        str(SMOKE),
        *QUICK,
        f"data_local={corpus}",
        f"save_folder={save_folder}",
        *overrides,
    ]


@pytest.mark.skipif(not LAUNCHER.exists(), reason="Composer's launcher is not installed")
def test_two_ranks_through_composers_launcher(corpus, tmp_path):
    command = [
        str(LAUNCHER),
        "-n",
        "2",
        "--master_port",
        str(29500 + os.getpid() % 1000),
        "-m",
        "mosaic_pretrain",
        *train_command(
            corpus,
            tmp_path / "ckpt",
            "max_duration=4ba",
            "eval_interval=4ba",
            "save_interval=4ba",
            "device_train_microbatch_size=4",
        )[3:],
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    records = [json.loads(line) for line in (tmp_path / "ckpt" / "metrics.jsonl").open()]
    samples = [r["time/sample"] for r in records if "time/sample" in r]
    assert max(samples) == 4 * 8  # 8 samples per global batch, 4 per rank
    assert (tmp_path / "ckpt" / "ep0-ba4-rank0.pt").exists()


RESUMABLE = [
    "max_duration=6ba",
    "eval_interval=6ba",
    "save_interval=2ba",
    "save_num_checkpoints_to_keep=-1",
    "autoresume=true",
    "device_train_microbatch_size=8",
]
DIE_WHILE_SAVING = Path(__file__).resolve().parent / "die_while_saving.py"


@pytest.fixture(scope="module")
def uninterrupted_folder(corpus, tmp_path_factory) -> Path:
    """The save folder of the 6-batch run nothing interrupts (checkpoints at 2, 4 and 6)."""
    folder = tmp_path_factory.mktemp("full")
    subprocess.run(
        train_command(corpus, folder / "ckpt", *RESUMABLE),
        cwd=folder,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return folder / "ckpt"


@pytest.fixture(scope="module")
def uninterrupted(uninterrupted_folder):
    """The final weights of the 6-batch run nothing interrupts."""
    return load_composer_weights(uninterrupted_folder / "ep0-ba6-rank0.pt")


def assert_same_weights(expected: dict, checkpoint: Path) -> None:
    got = load_composer_weights(checkpoint)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), f"{checkpoint}: {name}"


def resume_and_compare(corpus, tmp_path, folder: Path, uninterrupted: dict) -> None:
    subprocess.run(
        train_command(corpus, folder, *RESUMABLE),
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=600,
    )
    assert_same_weights(uninterrupted, folder / "ep0-ba6-rank0.pt")


def test_autoresume_after_sigkill_matches_an_uninterrupted_run(corpus, tmp_path, uninterrupted):
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        train_command(corpus, killed, *RESUMABLE),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    # Killed during a step, once the batch-2 checkpoint is complete (Composer links `latest`
    # after writing it).
    while not (killed / "latest-rank0.pt").exists():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "ep0-ba6-rank0.pt").exists()
    resume_and_compare(corpus, tmp_path, killed, uninterrupted)


STOP_AT_MOMENT = Path(__file__).resolve().parent / "stop_at_moment.py"


def start_until(moment: str, corpus, folder: Path, tmp_path: Path):
    """A training process held at `moment` (tests/stop_at_moment.py): python itself, no shell
    between, so a signal to it reaches the run. Returns the process, its signal file, its log."""
    index = len(list(tmp_path.glob("moment-*.log")))
    signal_file, log = tmp_path / f"moment-{index}", tmp_path / f"moment-{index}.log"
    command = [sys.executable, str(STOP_AT_MOMENT), moment, str(signal_file), "--"]
    command += train_command(corpus, folder, *RESUMABLE)[3:]
    with log.open("w") as output:
        process = subprocess.Popen(command, cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while not signal_file.exists():
        if process.poll() is not None:
            raise AssertionError(f"ended before {moment}: {log.read_text()[-3000:]}")
        assert time.monotonic() < deadline, f"{moment} not reached in 300 s"
        time.sleep(0.05)
    assert int(signal_file.read_text()) == process.pid  # the process held is the one started
    return process, signal_file, log


def kill(process: subprocess.Popen) -> None:
    """SIGKILL, then make sure it is gone (reaped) before anything starts again."""
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    with pytest.raises(ProcessLookupError):
        os.kill(process.pid, 0)


KILL_SEED = int(os.environ.get("KILL_SEED", "22"))  # another seed: KILL_SEED=N pytest ...
STEP_EVENTS = ("after_forward", "after_backward", "after_train_batch")
EVAL_BATCHES = 3  # the 178 validation rows in batches of 64


def kill_moments(seed: int) -> list[str]:
    """One moment of each kind (see tests/stop_at_moment.py), drawn in the order a run meets
    them, each after the checkpoint the run killed at the previous one continues from."""
    draw = random.Random(seed)
    step = draw.randint(1, 3)
    write = draw.choice([batch for batch in (2, 4) if batch >= step])
    after = draw.choice([batch for batch in (2, 4) if batch >= write])
    return [
        f"step:{step}:{draw.choice(STEP_EVENTS)}",
        f"write:{write}:{draw.uniform(0.05, 0.95):.2f}",
        f"after_checkpoint:{after}",
        f"eval:6:{draw.randrange(EVAL_BATCHES)}",
    ]


def test_sigkill_at_seeded_moments_then_autoresume_gives_the_uninterrupted_weights(
    corpus, tmp_path, uninterrupted_folder
):
    folder = tmp_path / "ckpt"
    moments = kill_moments(KILL_SEED)
    killed = None
    for moment in moments:
        process, _, log = start_until(moment, corpus, folder, tmp_path)
        if killed is not None:  # the kill left its lock behind: taken over, with a warning
            assert f"took over the lock of pid {killed} on host" in log.read_text(), moment
        kind, batch = moment.split(":")[:2]
        if kind == "write":
            assert not is_complete(folder / f"ep0-ba{batch}-rank0.pt")
        if kind == "after_checkpoint":
            assert os.readlink(folder / "latest-rank0.pt") == f"ep0-ba{batch}-rank0.pt"
        kill(process)
        assert json.loads((folder / LOCK_FILE).read_text())["pid"] == process.pid
        killed = process.pid
    done = subprocess.run(
        train_command(corpus, folder, *RESUMABLE),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"took over the lock of pid {killed} on host" in done.stderr
    assert not (folder / LOCK_FILE).exists()
    for batch in (2, 4, 6):  # every checkpoint, rewritten or not, is the uninterrupted run's
        name = f"ep0-ba{batch}-rank0.pt"
        assert_same_weights(load_composer_weights(uninterrupted_folder / name), folder / name)


def folder_state(folder: Path) -> dict:
    """Each entry's size and modification time; the lock's record (its time moves: refreshed)."""
    return {
        path.name: path.read_text() if path.name == LOCK_FILE else
        (path.lstat().st_size, path.lstat().st_mtime_ns)
        for path in folder.iterdir()
    }  # fmt: skip


def test_a_second_run_into_a_folder_in_use_is_refused_and_the_first_finishes_as_alone(
    corpus, tmp_path, uninterrupted
):
    folder = tmp_path / "ckpt"
    first, signal_file, log = start_until("after_checkpoint:2", corpus, folder, tmp_path)
    before = folder_state(folder)
    started = time.monotonic()
    second = subprocess.run(
        train_command(corpus, folder, *RESUMABLE),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    print(f"refused after {time.monotonic() - started:.1f} s")
    assert second.returncode == 2, second.stderr[-3000:]
    assert "Traceback" not in second.stderr and second.stdout == ""
    [line] = [line for line in second.stderr.splitlines() if "error" in line]
    assert line.startswith(
        f"mosaic-pretrain train: error: save_folder {folder} is in use by another run: "
        f"pid {first.pid} on host {socket.gethostname()} "
    )
    assert line.endswith("; wait for it to end, or choose another save_folder")
    assert folder_state(folder) == before  # nothing of the first run touched
    Path(f"{signal_file}.go").touch()
    assert first.wait(timeout=600) == 0, log.read_text()[-3000:]
    assert "took over" not in log.read_text()
    assert not (folder / LOCK_FILE).exists()
    assert_same_weights(uninterrupted, folder / "ep0-ba6-rank0.pt")


def die_while_saving(corpus, tmp_path, folder: Path, mode: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(DIE_WHILE_SAVING), "4", mode, "--"]
    command += train_command(corpus, folder, *RESUMABLE)[3:]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)


def test_a_kill_while_a_checkpoint_is_written_resumes_from_the_last_complete_one(
    corpus, tmp_path, uninterrupted
):
    folder = tmp_path / "ckpt"
    died = die_while_saving(corpus, tmp_path, folder, "kill")
    assert died.returncode == -signal.SIGKILL
    half_written = folder / "ep0-ba4-rank0.pt"
    assert half_written.exists() and os.readlink(folder / "latest-rank0.pt") == "ep0-ba2-rank0.pt"
    resume_and_compare(corpus, tmp_path, folder, uninterrupted)
    set_aside = list((folder / "incomplete").glob("ep0-ba4-rank0.pt.*"))
    assert len(set_aside) == 1 and set_aside[0].stat().st_size < half_written.stat().st_size


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(corpus, tmp_path, uninterrupted):
    folder = tmp_path / "ckpt"
    died = die_while_saving(corpus, tmp_path, folder, "disk-full")
    assert died.returncode == 2, died.stderr[-2000:]
    message = died.stderr.strip().splitlines()[-1]
    assert message.startswith("mosaic-pretrain train: error: no space left on the device")
    assert "last complete checkpoint is kept (ep0-ba2-rank0.pt)" in message
    assert os.readlink(folder / "latest-rank0.pt") == "ep0-ba2-rank0.pt"
    resume_and_compare(corpus, tmp_path, folder, uninterrupted)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_saves_a_checkpoint_exits_cleanly_and_autoresume_continues(
    corpus, tmp_path, stop_signal
):
    folder = tmp_path / "ckpt"
    common = [
        "eval_interval=1000ba",
        "save_interval=1000ba",
        "autoresume=true",
        "device_train_microbatch_size=8",
    ]
    process = subprocess.Popen(
        train_command(corpus, folder, "max_duration=500ba", *common),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = folder / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(stop_signal)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + stop_signal, stderr[-2000:]
    last_line = stderr.strip().splitlines()[-1]
    pattern = rf"stopped by {stop_signal.name} after batch (\d+); checkpoint (\S+) saved"
    match = re.search(pattern, last_line)
    assert match, last_line
    batch = int(match.group(1))
    assert match.group(2) == f"ep0-ba{batch}-rank0.pt" and is_complete(folder / match.group(2))
    assert "Traceback" not in stderr

    subprocess.run(
        train_command(corpus, folder, f"max_duration={batch + 2}ba", *common),
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=600,
    )
    assert (folder / f"ep0-ba{batch + 2}-rank0.pt").exists()
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    trained = [record["step"] for record in records if "loss/train/total" in record]
    assert trained == list(range(batch + 2))  # each batch once: resumed right after the saved one


# Two ranks started by hand with the variables Composer's launcher sets, so that each rank's exit
# code and last words can be read (the launcher SIGTERMs the others when one rank exits).
POISON_LOSS = Path(__file__).resolve().parent / "poison_loss.py"
TWO_RANKS = ["device_train_microbatch_size=4", "eval_interval=1000ba"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_two_ranks(command: list[str], tmp_path: Path) -> list[tuple[subprocess.Popen, Path]]:
    shared = {
        "WORLD_SIZE": "2",
        "LOCAL_WORLD_SIZE": "2",
        "NODE_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "PYTHONUNBUFFERED": "1",
    }
    ranks = []
    for rank in (0, 1):
        log = tmp_path / f"rank{rank}.stderr"
        with log.open("w") as stderr:
            env = {**os.environ, **shared, "RANK": str(rank), "LOCAL_RANK": str(rank)}
            process = subprocess.Popen(
                command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=stderr
            )
        ranks.append((process, log))
    return ranks


def last_words(ranks, timeout: float = 180) -> list[tuple[int, str]]:
    """Each rank's exit code and last line of stderr."""
    finished = []
    for process, log in ranks:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for other, _ in ranks:
                other.kill()
            raise
        finished.append((process.returncode, log.read_text().strip().splitlines()[-1]))
    return finished


def test_a_nan_on_one_rank_stops_both_at_the_same_batch(corpus, tmp_path):
    folder = tmp_path / "ckpt"
    train = train_command(corpus, folder, "max_duration=6ba", "save_interval=2ba", *TWO_RANKS)
    command = [sys.executable, str(POISON_LOSS), "3", "nan", "1", "--", *train[3:]]
    (code0, said0), (code1, said1) = last_words(start_two_ranks(command, tmp_path))
    assert code0 == code1 == 2, (said0, said1)
    assert said1.startswith("mosaic-pretrain train: error: the loss is nan while training batch 3;")
    assert said0.startswith(
        "mosaic-pretrain train: error: a non-finite loss on another rank (1 of them) while "
        "training batch 3;"
    )
    assert sorted(p.name for p in folder.glob("ep*.pt")) == ["ep0-ba2-rank0.pt"]
    assert os.readlink(folder / "latest-rank0.pt") == "ep0-ba2-rank0.pt"
    weights = load_composer_weights(folder / "ep0-ba2-rank0.pt")
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())


def test_sigterm_to_one_rank_stops_both_after_the_same_batch_with_a_checkpoint(corpus, tmp_path):
    folder = tmp_path / "ckpt"
    command = train_command(
        corpus, folder, "max_duration=500ba", "save_interval=1000ba", *TWO_RANKS
    )
    ranks = start_two_ranks(command, tmp_path)
    metrics = folder / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
        assert all(process.poll() is None for process, _ in ranks), "a rank ended early"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    ranks[1][0].send_signal(signal.SIGTERM)  # rank 1 only
    (code0, said0), (code1, said1) = last_words(ranks)
    assert code0 == code1 == 128 + signal.SIGTERM, (said0, said1)
    pattern = r"stopped by (.+) after batch (\d+); checkpoint (\S+) saved"
    stopped = [re.search(pattern, said) for said in (said0, said1)]
    assert all(stopped), (said0, said1)
    assert [match.group(1) for match in stopped] == ["signal on another rank", "SIGTERM"]
    batch = stopped[0].group(2)
    assert stopped[1].group(2) == batch
    assert stopped[0].group(3) == stopped[1].group(3) == f"ep0-ba{batch}-rank0.pt"
    assert is_complete(folder / f"ep0-ba{batch}-rank0.pt")
