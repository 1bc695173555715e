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
