"""The edges of issue 14, each with its exact message and exit status: a full disk while
ingesting, a live lock reached through a bind mount or held on another host, a WAL database
on read-only media, numbers beyond the database's range, FIFOs and devices, unbounded input,
a pathological user pattern, deep YAML, bad paths in a batch, a directory or an empty file
as config. File systems are real (tmpfs, bind mounts): where this machine cannot mount one
the test is skipped with the reason, and fails under CI=true."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dlq_workflows import behave, main_logs, make_toy_workflow, recover, snakemake
from helpers import VENV_BIN

pytestmark = pytest.mark.workflow

JOBS = [("01", "1"), ("01", "2"), ("02", "1"), ("02", "2")]


@pytest.fixture(scope="module")
def three_logs(tmp_path_factory) -> Path:
    """A toy workflow whose 4 jobs fail in each of 3 plain Snakemake runs."""
    root = make_toy_workflow(tmp_path_factory.mktemp("edges") / "wf", JOBS)
    for subject, session in JOBS:
        behave(root, subject, session, "until|never|1|MemoryError: " + "x" * 2000)
    for _ in range(3):
        assert snakemake(root, "--keep-going").returncode != 0
    return root


def _cannot(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: this test must run)")
    pytest.skip(reason)


def _mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        _cannot(f"cannot mount ({' '.join(args)}): {result.stderr.strip()}")


@contextlib.contextmanager
def tmpfs(where: Path, size: str):
    """A real, small tmpfs at `where` (unmounted afterwards)."""
    if shutil.which("mount") is None or os.geteuid() != 0:
        _cannot("mounting a tmpfs needs root and mount(8)")
    where.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where))
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(directory: Path, leave: int) -> Path:
    """Fill the file system of `directory` up, then give back `leave` bytes."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        size = handle.tell()
    with open(filler, "r+b") as handle:
        handle.truncate(max(0, size - leave))
    return filler


# ----------------------------------------------------------------------- 3. disk full


def test_disk_full_while_ingesting_says_what_was_committed(three_logs, tmp_path):
    root = tmp_path / "wf"
    shutil.copytree(three_logs, root)
    with tmpfs(tmp_path / "small", "1m") as disk:
        db = ["--db", str(disk / "queue.db")]
        created = recover(root, *db, "ingest", str(main_logs(root)[0]))
        assert created.returncode == 0, created.stderr
        filler = _fill(disk, leave=40 * 1024)  # room for the WAL index, not for the logs
        full = recover(root, *db, "ingest")
        assert full.returncode == 1, full.stderr
        found = re.fullmatch(
            rf"Error: the disk holding the dead-letter database {re.escape(str(disk))}/queue\.db "
            r"is full \(database or disk is full\)\. (\d) log\(s\) ingested and committed "
            r"before it(?: \((.+)\))?, each in its own transaction; not committed: "
            r"(\S+)(?: and (\d) more log\(s\))? \(nothing of them was written\)\. Fix the cause "
            r"and run `neuroflow-recover ingest` again: committed logs are skipped\.\n",
            full.stderr.splitlines(keepends=True)[-1],
        )
        assert found, full.stderr
        print(full.stderr)  # shown with -s: the message a user gets
        committed = int(found.group(1))
        assert committed + 1 + int(found.group(4) or 0) == 2  # the 2 logs not yet ingested
        assert "Traceback" not in full.stderr
        listed = recover(root, *db, "stats", "--format", "json")
        assert listed.returncode == 0, listed.stderr
        filler.unlink()
        again = recover(root, *db, "ingest")
        assert again.returncode == 0, again.stderr
        stats = json.loads(recover(root, *db, "stats", "--format", "json").stdout)
        assert (stats["total"], stats["unresolved"]) == (4, 4)
        shown = json.loads(recover(root, *db, "show", "1", "--json").stdout)
        assert shown["attempts"] == 3


# ------------------------------------------------------------- 4. a lock that is alive


def test_unlock_never_removes_a_lock_held_through_a_bind_mount(tmp_path):
    root = make_toy_workflow(tmp_path / "wf", [("01", "1"), ("01", "2")])
    behave(root, "01", "1", "until|fixed|1|MemoryError")
    assert recover(root, "run", "--", "--cores", "1", "results/01/1.txt").returncode == 1
    (root / "fixed").write_text("")
    behave(root, "01", "2", "wait|release|0|")
    other = tmp_path / "other-path"
    if os.geteuid() != 0:
        _cannot("a bind mount needs root")
    other.mkdir()
    _mount("--bind", str(root), str(other))
    holder = None
    try:
        holder = subprocess.Popen(
            [str(VENV_BIN / "snakemake"), "--cores", "1", "results/01/2.txt"],
            cwd=other, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 300
        while not (root / "started_01_2").exists():
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        refused = recover(root, "retry", "1", "--unlock")
        assert refused.returncode == 1
        assert refused.stderr == (
            f"Error: Snakemake is running in {root} (pid {holder.pid}) and holds its lock: "
            "wait for it to finish, nothing was changed\n"
        )
        assert list((root / ".snakemake" / "locks").iterdir())  # the live lock stayed
    finally:
        (root / "release").write_text("")
        if holder is not None:
            holder.wait(timeout=300)
        subprocess.run(["umount", "-l", str(other)], check=False)
    assert holder.returncode == 0
    assert recover(root, "retry", "1").returncode == 0


def test_a_lock_recorded_on_another_host_needs_force_unlock(tmp_path):
    root = make_toy_workflow(tmp_path / "wf", [("01", "1")])
    behave(root, "01", "1", "until|fixed|1|MemoryError")
    assert recover(root, "run", "--", "--cores", "1").returncode == 1
    (root / "fixed").write_text("")
    locks = root / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.input.lock").write_text(str(root / "results/01/1.txt") + "\n")
    holders = root / ".neuroflow" / "holders"
    holders.mkdir(parents=True, exist_ok=True)
    record = holders / "node-b-4242.json"
    record.write_text(json.dumps({"host": "node-b", "pid": 4242, "started": 1.0}))
    refused = recover(root, "retry", "1", "--unlock")
    assert refused.returncode == 1
    assert refused.stderr == (
        f"Error: the Snakemake lock of {root} was taken by a Snakemake started on another "
        "host (pid 4242 on host node-b); this host cannot see whether it still runs: check "
        "there, and if it does not, pass --force-unlock; nothing was changed\n"
    )
    forced = recover(root, "retry", "1", "--force-unlock")
    assert forced.returncode == 0, forced.stderr
    assert not record.exists()
    assert not locks.exists() or not any(locks.iterdir())


# ------------------------------------------------------------ 5. read-only media


def test_a_wal_database_on_read_only_media_can_be_read(three_logs, tmp_path):
    root = tmp_path / "wf"
    shutil.copytree(three_logs, root)
    with tmpfs(tmp_path / "media", "4m") as media:
        db = ["--db", str(media / "queue.db")]
        assert recover(root, *db, "ingest").returncode == 0
        assert not (media / "queue.db-wal").exists()  # closed cleanly: a WAL file, no -wal
        _mount("-o", "remount,ro", str(media))
        listed = recover(root, *db, "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert len(json.loads(listed.stdout)) == 4
        shown = recover(root, *db, "show", "1", "--json")
        assert shown.returncode == 0 and json.loads(shown.stdout)["attempts"] == 3
        stats = recover(root, *db, "stats", "--format", "json")
        assert stats.returncode == 0 and json.loads(stats.stdout)["total"] == 4
        refused = recover(root, *db, "resolve", "1")
        assert refused.returncode == 1
        assert refused.stderr == (
            f"Error: the dead-letter database {media}/queue.db is read-only (its directory "
            "cannot be written: read-only media or no permission); nothing was written\n"
        )


# --------------------------------------------------- 6. numbers beyond the range


def test_ids_and_limits_beyond_the_database_s_range(tmp_path, backend):
    root = make_toy_workflow(tmp_path / "wf", [("01", "1")])
    behave(root, "01", "1", "until|never|1|MemoryError")
    assert recover(root, "run", "--", "--cores", "1", env=backend.env()).returncode == 1
    for command in ("show", "resolve"):
        result = recover(root, command, "999999999999999999999", env=backend.env())
        assert result.returncode == 1
        assert result.stderr == "Error: no dead-letter entry with ID 999999999999999999999\n"
    retry = recover(root, "retry", "99999999999", env=backend.env())
    assert (retry.returncode, retry.stderr) == (1, "Error: no dead-letter entry with ID 99999999999\n")
    listed = recover(root, "list", "--limit", "99999999999999999999", "--json", env=backend.env())
    assert listed.returncode == 0, listed.stderr
    assert [entry["id"] for entry in json.loads(listed.stdout)] == [1]


# --------------------------------------------------- 7. unbounded input


def test_devices_fifos_and_oversized_pipes_are_refused_or_bounded(tmp_path):
    fifo = tmp_path / "run.snakemake.log"
    os.mkfifo(fifo)
    for name, kind in (("/dev/zero", "a character device"), (str(fifo), "a FIFO")):
        result = recover(tmp_path, "classify", name, timeout=120)
        assert result.returncode == 1
        assert result.stderr == (
            f"Error: cannot read {name}: not a regular file ({kind}); pipe it into "
            "`neuroflow-recover classify -` instead\n"
        )
    endless = subprocess.run(
        f"head -c 1100000000 /dev/zero | {sys.executable} -m neuroflow_recover.cli "
        f"-d {tmp_path} classify -",
        shell=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert endless.returncode == 1
    assert endless.stderr == (
        "Error: more than 1024 MiB on a pipe (classify reads at most that much from one; "
        "give the log as a file)\n"
    )
    piped = subprocess.run(
        f"(head -c 20000000 /dev/zero | tr '\\0' x; echo; echo MemoryError) | "
        f"{sys.executable} -m neuroflow_recover.cli -d {tmp_path} classify -",
        shell=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert (piped.returncode, piped.stdout) == (0, "ResourceError\n"), piped.stderr


def test_ingest_skips_a_fifo_named_like_a_log(three_logs, tmp_path):
    root = tmp_path / "wf"
    shutil.copytree(three_logs, root)
    fifo = root / ".snakemake" / "log" / "2000-01-01T000000.000001.snakemake.log"
    os.mkfifo(fifo)
    result = recover(root, "ingest", "--json", timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["logs"][0]["status"] == "unreadable"
    assert report["logs"][0]["message"] == "not a regular file (a FIFO)"
    assert [log["status"] for log in report["logs"][1:]] == ["ingested"] * 3
    named = recover(root, "ingest", str(fifo), timeout=300)
    assert (named.returncode, named.stderr) == (
        1, f"Error: nothing ingested: {fifo}: not a regular file (a FIFO)\n",
    )  # fmt: skip


def test_a_pathological_user_pattern_cannot_hang_classify(tmp_path):
    (tmp_path / "config").mkdir()
    line = "a" * 34 + "!"
    (tmp_path / "job.log").write_text(line + "\n")
    config = tmp_path / "config" / "config.yaml"
    # the regex engine runs the (a+)+ at once; (a|aa)+ backtracks exponentially
    config.write_text(
        "error_handling:\n  patterns:\n"
        "    - {id: nested, pattern: '^(a+)+$', class: ValidationError}\n"
    )
    quick = recover(tmp_path, "classify", str(tmp_path / "job.log"), timeout=300)
    assert (quick.returncode, quick.stdout) == (0, "RetryableError\n"), quick.stderr
    config.write_text(
        "error_handling:\n  patterns:\n"
        "    - {id: evil, pattern: '^(a|aa)+$', class: ValidationError}\n"
    )
    evil = recover(tmp_path, "classify", str(tmp_path / "job.log"), timeout=300,
                   env={"NEUROFLOW_PATTERN_TIMEOUT": "0.5"})  # fmt: skip
    assert evil.returncode == 1
    assert evil.stderr == (
        "Error: user pattern 'evil' ('^(a|aa)+$') did not finish within 0.5 s on this text: "
        "it backtracks catastrophically (overlapping repeats such as (a|aa)+); rewrite it "
        "(limit: env NEUROFLOW_PATTERN_TIMEOUT)\n"
    )


def test_deep_yaml_and_unusable_config_files(tmp_path):
    (tmp_path / "log.txt").write_text("MemoryError\n")
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    nested = tmp_path / "nested.yaml"
    nested.write_text("".join("  " * level + f"k{level}:\n" for level in range(2000)) + "\n")
    (tmp_path / "empty.yaml").write_text("# nothing but a comment\n")
    (tmp_path / "adir").mkdir()
    expected = {
        str(deep): f"Error: config file {deep} is nested too deeply to read (beyond Python's "
        "recursion limit; a configuration needs a few levels)\n",
        str(nested): f"Error: config file {nested} is nested too deeply to read (beyond "
        "Python's recursion limit; a configuration needs a few levels)\n",
        "empty.yaml": f"Error: config file {tmp_path}/empty.yaml is empty (no keys): "
        "Snakemake refuses it; write {} for a file without settings\n",
        "adir": "Error: config file adir cannot be read: not a regular file (a directory)\n",
    }
    for name, message in expected.items():
        for command in (["classify", str(tmp_path / "log.txt")], ["ingest"]):
            result = recover(tmp_path, "--configfile", name, *command, timeout=300)
            assert (result.returncode, result.stderr) == (1, message), (name, command)


# --------------------------------------------------- 8. bad paths in a batch


def test_a_batch_with_bad_paths_ingests_the_rest_and_names_them(three_logs, tmp_path):
    root = tmp_path / "wf"
    shutil.copytree(three_logs, root)
    loop = tmp_path / "loop.snakemake.log"
    loop.symlink_to(loop)
    missing = tmp_path / "missing.snakemake.log"
    logs = [str(p) for p in main_logs(root)]
    result = recover(root, "ingest", logs[0], str(loop), logs[1], str(missing), logs[2])
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"Error: not ingested: {loop}: a symlink loop (too many levels of symbolic links); "
        f"{missing}: no such file (the other logs were)"
    )
    statuses = [line.split(": ")[1] for line in result.stdout.splitlines()[:3]]
    assert all(status.startswith("ingested, 4 failed job(s)") for status in statuses)
    stats = json.loads(recover(root, "stats", "--format", "json").stdout)
    assert (stats["total"], stats["unresolved"]) == (4, 4)
