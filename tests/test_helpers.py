"""The test helpers that start processes leave none behind: a worker whose parent has exited (an
orphan, as torchrun's can become) and a run cut by its timeout both lose their whole process group."""
import os
import subprocess
import sys
import time

import pytest

from tests.helpers import run_group, spawn

# a parent that starts a long-sleeping child, writes the child's pid, and (unless told) exits at once
PARENT = ("import subprocess, sys, time; "
          "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
          "open(sys.argv[1], 'w').write(str(c.pid)); time.sleep(float(sys.argv[2]))")


def gone(pid: int, wait: float = 10.0) -> bool:
    """The process has ended (no such pid, or a zombie waiting for init)."""
    deadline = time.time() + wait
    while time.time() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_an_orphaned_worker_is_killed_with_its_group(tmp_path):
    pid_file = tmp_path / "pid"
    r = run_group([sys.executable, "-c", PARENT, pid_file, "0"], timeout=120)
    assert r.returncode == 0, r.stderr
    assert gone(int(pid_file.read_text()))


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_a_run_past_its_timeout_is_killed_with_its_group(tmp_path):
    pid_file = tmp_path / "pid"
    with pytest.raises(subprocess.TimeoutExpired):
        with spawn([sys.executable, "-c", PARENT, pid_file, "120"]) as proc:
            deadline = time.time() + 120
            while not (pid_file.is_file() and pid_file.read_text()) and time.time() < deadline:
                time.sleep(0.05)
            proc.wait(timeout=0.5)
    assert proc.returncode is not None and gone(proc.pid) and gone(int(pid_file.read_text()))
