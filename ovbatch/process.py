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
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import resource

log = logging.getLogger(__name__)
PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def no_core_dumps() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if _libc().prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        log.warning("prctl(PR_SET_DUMPABLE, 0) failed (errno %d): core dumps are off by RLIMIT_CORE only", err)


def dumpable() -> bool:
    return bool(_libc().prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))
