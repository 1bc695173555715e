"""Random mutations of a registry version's stored objects: none may be accepted, each refused with
an error that names the model.

    python -m benchmarks.mutations [--count 10000] [--seed 0]

One version of a small OpenVINO IR (its weights span three 1 MiB encryption chunks) and a second
version of the same model are imported into a file:// registry; each trial restores the pristine
objects, applies one mutation and decrypts the version the way workers do
(``decrypt_version``: manifest, wrapped key, every chunk, no extra digest pass). A trial is:

* accepted if the decrypt succeeds (a mutation that leaves the manifest's JSON equal is not a
  mutation and is drawn again);
* unclear if it fails with anything but an ``OvbatchError`` whose message names ``name@version``.

Mutations: byte flips, truncation (anywhere, and at chunk boundaries), extension (random bytes, a
copy of a chunk), chunks swapped, duplicated, dropped or reordered inside a file, files swapped
between roles, a file replaced by the other version's, and manifest edits (every field: changed,
removed, retyped; file entries removed, added, reordered; the wrapped key, key id, MAC, name,
version and chunk size).
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import random
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from ovbatch.crypto.stream import DEFAULT_CHUNK_LOG2, HEADER_BYTES, TAG_BYTES

CHUNK_LOG2 = DEFAULT_CHUNK_LOG2  # 1 MiB chunks
HIDDEN = 724  # a 724x724 f32 weight: 2.1 MB, three chunks, so chunk-level mutations have something to move
MODEL = "tiny"


def _build(folder: Path) -> tuple[Path, dict[str, bytes]]:
    """A registry with tiny@1 and tiny@2 (different weights); the pristine bytes of every object."""
    from ovbatch.crypto.keyring import Keyring
    from ovbatch.registry.registry import Registry
    from ovbatch.storage.file import FileStore
    from tests.conftest import build_tiny_ir

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    ring = Keyring(folder / "keyring.json")
    ring.add_new_key()
    ring.save()
    store_root = folder / "storage"
    registry = Registry(FileStore(store_root), ring)
    registry.import_folder(build_tiny_ir(folder / "src1", seed=1, hidden=HIDDEN), MODEL)
    registry.import_folder(build_tiny_ir(folder / "src2", seed=2, hidden=HIDDEN), MODEL)
    pristine = {str(p.relative_to(store_root)): p.read_bytes() for p in store_root.rglob("*") if p.is_file()}
    return store_root, pristine


def _chunks(blob: bytes) -> tuple[bytes, list[bytes]]:
    step = (1 << CHUNK_LOG2) + TAG_BYTES
    body = blob[HEADER_BYTES:]
    return blob[:HEADER_BYTES], [body[i : i + step] for i in range(0, len(body), step)]


def _manifest_edit(m: dict[str, Any], rng: random.Random) -> str:
    files = m["files"]
    entry = rng.choice(files)
    choice = rng.randrange(14)
    if choice == 0:
        field = rng.choice(["sha256", "size", "ciphertext_size", "role"])
        value = entry[field]
        entry[field] = (value + rng.choice([-1, 1, 4096])) if isinstance(value, int) else value[::-1]
        return f"file entry {field} changed"
    if choice == 1:
        del entry[rng.choice(list(entry))]
        return "file entry field removed"
    if choice == 2:
        files.remove(entry)
        return "file entry removed"
    if choice == 3:
        files.append(copy.deepcopy(entry) | {"role": "extra.bin"})
        return "file entry added"
    if choice == 4 and len(files) > 1:
        files.reverse()
        return "file entries reordered"
    if choice == 5:
        raw = bytearray(base64.b64decode(m["wrapped_key"]))
        raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        m["wrapped_key"] = base64.b64encode(bytes(raw)).decode()
        return "wrapped key bit flipped"
    if choice == 6:
        m["wrapped_key"] = rng.choice(["", "!!!", "AAAA", m["wrapped_key"][:-4]])
        return "wrapped key malformed"
    if choice == 7:
        m["key_id"] = rng.choice(["kek-0000000000000000", "", 7, None])
        return "key id changed"
    if choice == 8:
        m["mac"] = rng.choice(["0" * 64, "", None, m["mac"][::-1]])
        return "MAC changed"
    if choice == 9:
        m[rng.choice(["name", "version"])] = rng.choice(["other", "2", "1", 1, None])
        return "name or version changed"
    if choice == 10:
        m["chunk_log2"] = rng.choice([v for v in (12, 16, 20, 21, 0, 64, -1, "20") if v != m.get("chunk_log2")])
        return "chunk size changed"
    if choice == 11:
        del m[rng.choice([k for k in m if k != "mac"])]
        return "manifest field removed"
    if choice == 12:
        key = rng.choice([k for k in m if k not in ("files",)])
        m[key] = rng.choice([[], {}, 3.5, True, "x" * 3])
        return "manifest field retyped"
    m["files"] = rng.choice([[], {}, "files", None, [1, 2]])
    return "file list replaced"


def mutate(store: Path, pristine: dict[str, bytes], rng: random.Random) -> str:
    """Apply one random mutation to the objects of tiny@1 under ``store``; return its kind."""
    v1 = {k: v for k, v in pristine.items() if k.startswith(f"models/{MODEL}/1/")}
    manifest_key = f"models/{MODEL}/1/manifest.json"
    encs = sorted(k for k in v1 if k.endswith(".enc"))
    kind = rng.choice(["flip", "truncate", "extend", "chunks", "swap-files", "other-version", "manifest"])
    if kind == "manifest":
        original = json.loads(v1[manifest_key])
        m = copy.deepcopy(original)
        while m == original:  # an edit that sets a field to its own value is no mutation: draw again
            m = copy.deepcopy(original)
            what = _manifest_edit(m, rng)
        (store / manifest_key).write_text(json.dumps(m))
        return f"manifest: {what}"
    if kind == "swap-files" and len(encs) > 1:
        a, b = rng.sample(encs, 2)
        (store / a).write_bytes(v1[b])
        (store / b).write_bytes(v1[a])
        return "files swapped between roles"
    if kind == "other-version":
        key = rng.choice([*encs, manifest_key])
        (store / key).write_bytes(pristine[key.replace(f"/{MODEL}/1/", f"/{MODEL}/2/")])
        return "object replaced by the other version's"
    key = rng.choice([*encs, manifest_key]) if kind in ("flip", "truncate", "extend") else rng.choice(encs)
    blob = bytearray(v1[key])
    if kind == "flip":
        while True:
            i = rng.randrange(len(blob))
            blob[i] ^= 1 << rng.randrange(8)
            if key != manifest_key or _json_differs(bytes(blob), v1[key]):
                break
            blob[i] ^= 0  # whitespace or a no-op: try another byte
        (store / key).write_bytes(bytes(blob))
        return "byte flipped" + (" (manifest)" if key == manifest_key else "")
    if kind == "truncate":
        header, chunks = _chunks(bytes(blob))
        cut = rng.choice([rng.randrange(len(blob)), HEADER_BYTES + len(chunks[0]) * rng.randrange(len(chunks))])
        (store / key).write_bytes(bytes(blob[:cut]))
        return "truncated" + (
            " at a chunk boundary" if cut > HEADER_BYTES and (cut - HEADER_BYTES) % len(chunks[0]) == 0 else ""
        )
    if kind == "extend":
        extra = rng.choice([rng.randbytes(rng.randrange(1, 5000)), _chunks(bytes(blob))[1][0]])
        (store / key).write_bytes(bytes(blob) + extra)
        return "extended"
    header, chunks = _chunks(bytes(blob))
    op = rng.choice(["swap", "duplicate", "drop", "rotate"])
    if len(chunks) < 2:
        op = "duplicate"
    if op == "swap":
        i, j = rng.sample(range(len(chunks)), 2)
        chunks[i], chunks[j] = chunks[j], chunks[i]
    elif op == "duplicate":
        i = rng.randrange(len(chunks))
        chunks.insert(i, chunks[i])
    elif op == "drop":
        del chunks[rng.randrange(len(chunks))]
    else:
        k = rng.randrange(1, len(chunks))
        chunks = chunks[k:] + chunks[:k]
    (store / key).write_bytes(header + b"".join(chunks))
    return f"chunks: {op}"


def _json_differs(a: bytes, b: bytes) -> bool:
    try:
        return bool(json.loads(a) != json.loads(b))
    except ValueError:
        return True


def run_mutations(folder: Path, count: int, seed: int = 0) -> dict[str, Any]:
    from ovbatch.crypto.keyring import Keyring
    from ovbatch.errors import OvbatchError
    from ovbatch.registry.loader import decrypt_version
    from ovbatch.registry.refs import ModelRef
    from ovbatch.registry.registry import Registry
    from ovbatch.storage.file import FileStore

    store, pristine = _build(folder)
    ring = Keyring.load(folder / "keyring.json")
    rng = random.Random(seed)
    kinds: Counter[str] = Counter()
    accepted: list[str] = []
    unclear: list[str] = []
    errors: Counter[str] = Counter()
    for _ in range(count):
        what = mutate(store, pristine, rng)
        kinds[what.split(":")[0].split(" (")[0]] += 1
        registry = Registry(FileStore(store), ring)  # a fresh one: no manifest kept from the last trial
        try:
            version = decrypt_version(registry, ModelRef.parse(f"{MODEL}@1"))
            version.wipe()
            accepted.append(what)
        except OvbatchError as exc:
            errors[type(exc).__name__] += 1
            if f"{MODEL}@1" not in str(exc):
                unclear.append(f"{what}: {type(exc).__name__}: {exc}")
        except Exception as exc:  # a bare KeyError, TypeError... : not a clear error
            unclear.append(f"{what}: {type(exc).__name__}: {exc}")
        for rel, data in pristine.items():  # restore what the mutation touched
            path = store / rel
            if path.stat().st_size != len(data) or path.read_bytes() != data:
                path.write_bytes(data)
    for rel, data in pristine.items():
        (store / rel).write_bytes(data)
    decrypt_version(Registry(FileStore(store), ring), ModelRef.parse(f"{MODEL}@1")).wipe()  # the pristine one opens
    return {
        "mutations": count,
        "accepted": len(accepted),
        "unclear_errors": len(unclear),
        "by_kind": dict(sorted(kinds.items())),
        "errors": dict(sorted(errors.items())),
        "accepted_examples": accepted[:5],
        "unclear_examples": sorted(set(unclear))[:10],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path(".cache/fault-suite/mutations"))
    args = parser.parse_args()
    print(json.dumps(run_mutations(args.work, args.count, args.seed), indent=1))


if __name__ == "__main__":
    main()
