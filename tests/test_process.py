"""Processes that hold keys and plaintext weights write no core dumps (ovbatch/process.py)."""

from __future__ import annotations

import subprocess
import sys


def test_no_core_dumps_sets_a_hard_zero_core_limit_and_clears_dumpable() -> None:
    code = (
        "import resource\n"
        "from ovbatch.process import dumpable, no_core_dumps\n"
        "assert dumpable()\n"
        "no_core_dumps()\n"
        "print(resource.getrlimit(resource.RLIMIT_CORE), dumpable())\n"
        "try:\n"
        "    resource.setrlimit(resource.RLIMIT_CORE, (1 << 20, 1 << 20))\n"
        "    print('raised')\n"
        "except (ValueError, OSError):\n"
        "    print('kept')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    limit, again = done.stdout.splitlines()
    assert limit == "(0, 0) False", f"core limit and dumpable after no_core_dumps(): {limit}"
    # root may raise a hard limit again (CAP_SYS_RESOURCE); any other user may not
    assert again == "kept" or subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() == "0"


def test_a_crash_in_a_hardened_process_leaves_no_core_file(tmp_path: object) -> None:
    """SIGSEGV after no_core_dumps(): the kernel writes nothing (RLIMIT_CORE 0, not dumpable)."""
    from pathlib import Path

    work = Path(str(tmp_path))
    code = "import ctypes\nfrom ovbatch.process import no_core_dumps\nno_core_dumps()\nctypes.string_at(0)\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, timeout=60)
    assert done.returncode == -11, f"expected SIGSEGV, got {done.returncode}: {done.stderr[-500:]!r}"
    assert not [p for p in work.iterdir() if p.name.startswith("core")], list(work.iterdir())


def test_a_child_started_with_die_with_parent_is_killed_when_its_parent_is() -> None:
    """A harness killed mid-run (no cleanup) must not leave its worker running: the parent starts a
    long sleeper with ``die_with_parent``, prints its pid and is SIGKILLed; the sleeper must go too."""
    import os
    import signal
    import time
    from pathlib import Path

    code = (
        "import subprocess, sys, time\n"
        "from ovbatch.process import die_with_parent\n"
        "child = subprocess.Popen(['sleep', '300'], preexec_fn=die_with_parent)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    os.kill(child, 0)  # running
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=30)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return
        if state == "Z":  # dead, not yet reaped by its new parent
            return
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    raise AssertionError(f"child {child} outlived its SIGKILLed parent by 10 s: die_with_parent did not take")
