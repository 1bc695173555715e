"""What a process that holds keys and decrypted weights does first: no core dumps.

A parser crash on hostile input (libsndfile, FFmpeg, an image decoder) would otherwise write a core
file holding the process's memory: data keys, key-encryption keys and plaintext weights. Workers and
the embedded mode call ``no_core_dumps()`` before they read a keyring:

* ``RLIMIT_CORE`` = 0 (soft and hard): the kernel writes no core file, and the limit cannot be raised
  again by this process or its children;
* ``PR_SET_DUMPABLE`` = 0: no core through a ``core_pattern`` pipe either, and other processes of the
  same user cannot ``ptrace`` it or read its ``/proc/<pid>/mem``.

Deployments say the same outside the process (systemd ``LimitCORE=0``, compose ``ulimits: core: 0``),
in case a library forks a helper before this runs.

``die_with_parent`` is for the other direction: a worker, Redis server or S3 server that a test or a
benchmark starts must not outlive it. Killed mid-run (CI's time limit, Ctrl-C twice, SIGKILL), the
harness runs no cleanup, and an orphaned ``ovbatch worker`` then goes on taking jobs from the next
run's queue on the same Redis database.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import resource
import signal

log = logging.getLogger(__name__)
PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3
PR_SET_PDEATHSIG = 1


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


_PRCTL = _libc().prctl  # resolved at import, in the parent: the child calls it between fork and exec


def no_core_dumps() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if _libc().prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        log.warning("prctl(PR_SET_DUMPABLE, 0) failed (errno %d): core dumps are off by RLIMIT_CORE only", err)


def dumpable() -> bool:
    return bool(_libc().prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))


def die_with_parent() -> None:
    """``preexec_fn`` for ``subprocess.Popen``: the child gets SIGKILL when the process that started it
    dies, however it dies (``PR_SET_PDEATHSIG``; kept across ``exec``). Linux only; the signal follows
    the *thread* that forked, so start such children from a thread that lives as long as they should."""
    parent = os.getppid()
    if _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent died before the call: nobody would send the signal
        os.kill(os.getpid(), signal.SIGKILL)
