"""deploy/ and docker-compose.yml stay in step with the code, and hold no password.

No Docker engine or Kubernetes runs here, so the containers themselves are not started. What can
drift without one is checked: every command line in them parses with the real CLI, every
environment variable is one Settings reads (and Settings accepts its value), the queue KEDA watches
is the one workers serve, the keyring reaches the image's user with a mode Keyring.load accepts, every
password is required and none has a default, Redis requires one, Flower is not open, supervisors wait
longer than the workers' stop grace, and systemd accepts the unit file. Where the tools are installed
(the dev extra installs them): Docker Compose itself reads the compose file, the Kubernetes objects
match the API schema, and a real redis-server runs compose's Redis command and a TLS Redis.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import redis
import yaml

from ovbatch.cli.main import cli
from ovbatch.crypto.keyring import Keyring
from ovbatch.errors import KeyringError
from ovbatch.settings import Settings
from ovbatch.workers.app import make_app, queue_for
from tests.conftest import REPO, free_port


class _Asked(dict[str, str]):
    """An empty environment that notes every name looked up in it."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.names.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.names.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.names.add(str(key))
        return super().__contains__(key)


def settings_vars() -> set[str]:
    """The variables Settings reads: those it asks an empty environment for, and those settings.py names."""
    asked = _Asked()
    Settings.from_env(asked, cwd=REPO)
    named = re.findall(r"OVBATCH_[A-Z0-9_]+", (REPO / "ovbatch" / "settings.py").read_text())
    return {n for n in asked.names if n.startswith("OVBATCH_")} | set(named)


SETTINGS_VARS = settings_vars()
AWS_VARS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|BASIC_AUTH|KEYRING_JSON")
# what a deployer would export before `docker compose up`: every variable compose requires
COMPOSE_ENV = {
    "REDIS_PASSWORD": "test-redis-password",
    "MINIO_ROOT_PASSWORD": "test-minio-password",
    "FLOWER_BASIC_AUTH": "admin:test-flower-password",
}
DEPLOY_FILES = [REPO / "docker-compose.yml", *sorted(p for p in (REPO / "deploy").rglob("*") if p.is_file())]
K8S_WORKER = REPO / "deploy" / "k8s" / "worker-cpu.yaml"
SYSTEMD_UNIT = REPO / "deploy" / "systemd" / "ovbatch-worker@.service"


def parses(args: list[str], where: str) -> None:
    """Resolve ``ovbatch ARGS`` to its command and parse its options, as running it would."""
    try:
        ctx = cli.make_context("ovbatch", list(args))
        command: click.Command = cli
        rest = list(args)
        while isinstance(command, click.Group):
            name, sub, rest = command.resolve_command(ctx, rest)
            assert sub is not None, f"{where}: `ovbatch {shlex.join(args)}`: no command {name!r}"
            command = sub
            ctx = command.make_context(str(name), list(rest), parent=ctx)
    except click.ClickException as exc:
        pytest.fail(f"{where}: `ovbatch {shlex.join(args)}` does not parse: {exc.format_message()}")


def dockerfile() -> dict[str, Any]:
    text = (REPO / "deploy" / "Dockerfile").read_text()
    json_line = {k: yaml.safe_load(v) for k, v in re.findall(r"^(ENTRYPOINT|CMD) (\[.*\])$", text, re.M)}
    env = dict(re.findall(r"^ENV (\S+)=(\S+)$", text, re.M))
    copied = re.findall(r"^COPY (\S+) (\S+)$", text, re.M)
    user = re.search(r"^USER (\S+)$", text, re.M)
    pip = re.findall(r"^RUN pip install (.*)$", text, re.M)
    return {**json_line, "env": env, "copied": copied, "user": user.group(1) if user else None, "pip": pip}


def image_uid_gid() -> tuple[int, int]:
    user = dockerfile()["user"]
    found = re.fullmatch(r"(\d+):(\d+)", user or "")
    assert found, f"deploy/Dockerfile USER {user!r}: use a numeric uid:gid (runAsNonRoot can only verify those)"
    return int(found.group(1)), int(found.group(2))


# --- Docker Compose ----------------------------------------------------------------------------------


class MissingVariable(Exception):
    """Raised when a ``${VAR:?message}`` reference finds VAR unset or empty, as compose refuses to."""


_REFERENCE = re.compile(r"\$(?:(?P<dollar>\$)|\{(?P<name>\w+)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|(?P<bare>\w+))")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable interpolation: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR:?error}, ${VAR:+alt}."""

    def value(m: re.Match[str]) -> str:
        if m["dollar"]:
            return "$"
        name, op, arg = m["name"] or m["bare"], m["op"] or "", m["arg"] or ""
        current = env.get(name)
        unset = current is None or (op.startswith(":") and current == "")
        if op.endswith("?") and unset:
            raise MissingVariable(f"{name}: {arg}")
        if op.endswith("-") and unset:
            return arg
        if op.endswith("+"):
            return "" if unset else arg
        return current or ""

    return _REFERENCE.sub(value, text)


def interpolated(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolated(v, env) for v in node]
    if isinstance(node, dict):
        return {k: interpolated(v, env) for k, v in node.items()}
    return node


def compose_raw() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def compose(env: Mapping[str, str] = COMPOSE_ENV) -> dict[str, Any]:
    """The compose file as compose runs it with ENV exported."""
    return interpolated(compose_raw(), env)


def ours(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in spec["services"].items() if "build" in s}


def test_the_image_copies_every_package_folder_and_runs_a_valid_command() -> None:
    image = dockerfile()
    assert image["ENTRYPOINT"] == ["ovbatch"]
    parses(image["CMD"], "deploy/Dockerfile CMD")
    copied = {src for src, _ in image["copied"]}
    packages = {"ovbatch", "cli", "tasks", "workers"}
    assert packages <= copied, f"deploy/Dockerfile does not COPY {packages - copied}"
    assert set(image["env"]) <= SETTINGS_VARS, f"unknown settings in the image: {set(image['env']) - SETTINGS_VARS}"
    assert image_uid_gid()[0] != 0, "the image must not run as root"


def test_the_image_installs_the_decoder_for_containers_libsndfile_cannot_read() -> None:
    audio = (REPO / "tasks" / "transcribe" / "audio.py").read_text()
    assert "import av" in audio, "tasks/transcribe/audio.py no longer uses PyAV: drop it from the image"
    requirements = [r for line in dockerfile()["pip"] for r in shlex.split(line) if not r.startswith("-")]
    assert any(re.match(r"av\b", r) for r in requirements), "deploy/Dockerfile must pip install av (PyAV)"


def test_every_compose_service_of_the_image_runs_a_valid_command_with_known_settings() -> None:
    spec = compose()
    keyring = dockerfile()["env"]["OVBATCH_KEYRING"]
    services = ours(spec)
    assert {"worker-cpu", "worker-gpu", "cli"} <= set(services)
    for name, service in services.items():
        assert service["build"]["dockerfile"] == "deploy/Dockerfile", name
        assert (REPO / service["build"]["context"] / service["build"]["dockerfile"]).is_file(), name
        if "command" in service:
            parses(service["command"], f"docker-compose.yml service {name}")
        env = service["environment"]
        unknown = {v for v in env if v.startswith("OVBATCH_")} - SETTINGS_VARS
        assert not unknown, f"docker-compose.yml service {name}: settings ovbatch/settings.py does not read: {unknown}"
        assert set(env) <= SETTINGS_VARS | AWS_VARS, (
            f"service {name}: unexpected variables {set(env) - SETTINGS_VARS - AWS_VARS}"
        )
        assert "OVBATCH_KEYRING" not in env, f"service {name}: the keyring is a file secret, not a variable"
        assert [s["target"] for s in service["secrets"]] == [keyring], f"service {name}: keyring not at {keyring}"
        Settings.from_env(env, cwd=REPO)  # the values too: a ConfigError fails the test
        assert env.get("OVBATCH_ALLOWED_ROOTS"), f"service {name}: workers need OVBATCH_ALLOWED_ROOTS"
    broker = urlsplit(services["worker-cpu"]["environment"]["OVBATCH_BROKER_URL"])
    assert (broker.scheme, broker.hostname, broker.port) == ("redis", "redis", 6379), "workers use the compose Redis"
    assert {"redis", "minio"} <= set(services["worker-cpu"]["depends_on"])


def secret_reference(raw: str) -> bool:
    """Whether RAW is nothing but a required variable: ``${VAR:?message}`` or ``${VAR?message}``."""
    return re.fullmatch(r"\$\{\w+:?\?[^}]*\}", raw) is not None


def test_no_deploy_file_gives_a_password_a_default() -> None:
    fallback = re.compile(r"\$\{(\w*(?:PASSWORD|SECRET|TOKEN|AUTH)\w*):?[-+]")
    for path in DEPLOY_FILES:
        found = fallback.findall(path.read_text())
        assert not found, f"{path.relative_to(REPO)}: {found} must be required (${{VAR:?message}}), not defaulted"


def test_every_compose_password_is_a_required_variable() -> None:
    for name, service in compose_raw()["services"].items():
        for var, raw in (service.get("environment") or {}).items():
            raw = str(raw)
            if SECRET_NAME.search(var):
                assert secret_reference(raw), f"service {name}: {var}={raw!r} must be ${{VAR:?message}}"
            password = re.match(r"\w+://[^:/@]*:(.*)@[^@]*$", raw)
            if password:
                assert secret_reference(password.group(1)), f"service {name}: {var} holds a literal password"
    for name in COMPOSE_ENV:
        env = {k: v for k, v in COMPOSE_ENV.items() if k != name}
        with pytest.raises(MissingVariable, match=name):
            compose(env)


def test_compose_redis_requires_the_password_every_client_uses() -> None:
    spec = compose()
    redis_service = spec["services"]["redis"]
    script = redis_service["command"][-1]
    assert re.search(r"^requirepass \$REDIS_PASSWORD$", script, re.M), "Redis must get requirepass from REDIS_PASSWORD"
    assert redis_service["environment"]["REDIS_PASSWORD"] == COMPOSE_ENV["REDIS_PASSWORD"]
    clients = {name: s["environment"]["OVBATCH_BROKER_URL"] for name, s in ours(spec).items()}
    clients["flower"] = spec["services"]["flower"]["environment"]["CELERY_BROKER_URL"]
    for name, url in clients.items():
        assert urlsplit(url).password == COMPOSE_ENV["REDIS_PASSWORD"], f"service {name} does not send the password"


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_compose_redis_command_makes_a_real_redis_require_the_password(tmp_path: Path) -> None:
    """compose's Redis command, run by sh with redis-server on loopback: no password, no access."""
    script = compose()["services"]["redis"]["command"]
    assert script[:2] == ["sh", "-c"]
    port = free_port()
    shim = tmp_path / "bin" / "redis-server"  # the same redis-server, on a free port and a scratch folder
    shim.parent.mkdir()
    server = shutil.which("redis-server")
    shim.write_text(f'#!/bin/sh\nexec {server} --port {port} --bind 127.0.0.1 --dir {tmp_path} --save "" "$@"\n')
    shim.chmod(0o755)
    env = {"PATH": f"{shim.parent}:{os.environ['PATH']}", "REDIS_PASSWORD": COMPOSE_ENV["REDIS_PASSWORD"]}
    with running(script, env, port):
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, password="wrong").ping()
        assert redis.Redis(port=port, password=COMPOSE_ENV["REDIS_PASSWORD"]).ping()


@contextmanager
def running(command: list[str], env: Mapping[str, str], port: int, stdin: str = "") -> Iterator[None]:
    """COMMAND started and answering on PORT (within 10 s), stopped on exit."""
    process = subprocess.Popen(
        command, env=dict(env), text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        process.stdin.write(stdin)  # type: ignore[union-attr]
        process.stdin.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + 10
        while not port_open(port):
            assert time.monotonic() < deadline, f"{command[0]} did not answer on port {port}"
            if process.poll() is not None:
                pytest.fail(f"{shlex.join(command)} exited: {process.stdout.read()}")  # type: ignore[union-attr]
            time.sleep(0.05)
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()  # type: ignore[union-attr]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_flower_is_reachable_only_on_loopback_and_behind_basic_auth() -> None:
    flower = compose()["services"]["flower"]
    raw = compose_raw()["services"]["flower"]
    assert secret_reference(raw["environment"]["FLOWER_BASIC_AUTH"]), "Flower's basic auth must be required"
    assert not any("basic" in a or "auth" in a for a in flower["command"]), "credentials belong in the environment"
    for port in flower.get("ports", []):
        assert str(port).startswith("127.0.0.1:"), f"Flower published beyond the loopback: {port}"


def test_the_compose_keyring_is_copied_in_owned_by_the_image_user_with_a_mode_the_loader_accepts(
    tmp_path: Path,
) -> None:
    spec = compose_raw()
    uid, gid = image_uid_gid()
    source = spec["secrets"]["keyring"]
    # compose bind-mounts a `file:` secret as the host file is, ignoring uid/gid/mode; it applies them
    # only to a secret it copies in, which is one taken from its environment
    assert set(source) == {"environment"}, "the keyring secret must come from compose's environment"
    assert SECRET_NAME.search(source["environment"])
    for name, service in ours(spec).items():
        (mount,) = service["secrets"]
        assert (mount["uid"], mount["gid"]) == (str(uid), str(gid)), (
            f"service {name}: keyring not owned by the image user"
        )
        assert_the_loader_accepts(mount["mode"], tmp_path)


def assert_the_loader_accepts(mode: int, tmp_path: Path) -> None:
    ring = Keyring(tmp_path / f"keyring-{mode:o}.json")
    ring.add_new_key()
    ring.save()
    ring.path.chmod(mode)
    assert mode & 0o400, f"mode {mode:04o}: the owner cannot read the keyring"
    Keyring.load(ring.path)  # raises KeyringError for a mode it refuses


def docker_compose() -> str | None:
    beside = Path(sys.executable).with_name("docker-compose")
    return str(beside) if beside.exists() else shutil.which("docker-compose")


@pytest.mark.skipif(docker_compose() is None, reason="docker-compose is not installed (pip install -e '.[dev]')")
def test_docker_compose_reads_the_file_as_these_tests_do_and_requires_every_password() -> None:
    """`docker compose config` needs no engine: it validates and interpolates the file."""
    command = [str(docker_compose()), "--project-directory", str(REPO), "-f", str(REPO / "docker-compose.yml")]
    command += ["--profile", "gpu", "--profile", "cli", "config", "--format", "json"]
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    done = subprocess.run(command, env={**base, **COMPOSE_ENV}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    real = json.loads(done.stdout)["services"]
    mine = compose()["services"]
    for name, service in real.items():
        assert service.get("environment", {}) == {k: str(v) for k, v in mine[name].get("environment", {}).items()}, name
    for name in COMPOSE_ENV:
        env = {**base, **{k: v for k, v in COMPOSE_ENV.items() if k != name}}
        refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and f"required variable {name}" in refused.stderr, refused.stderr


# --- Kubernetes --------------------------------------------------------------------------------------


def k8s_docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(K8S_WORKER.read_text()) if d]


def k8s(kind: str, name: str | None = None) -> dict[str, Any]:
    return next(d for d in k8s_docs() if d["kind"] == kind and name in (None, d["metadata"]["name"]))


def k8s_pod() -> dict[str, Any]:
    return k8s("Deployment")["spec"]["template"]["spec"]


def k8s_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's explicit environment, $(VAR) expanded, a secret's value shown as secret.NAME.KEY."""
    env: dict[str, str] = {}
    for entry in container.get("env", []):
        if "valueFrom" in entry:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = f"secret.{ref['name']}.{ref['key']}"
        else:
            env[entry["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), entry["value"])
    return env


def test_the_kubernetes_worker_runs_a_valid_command_and_keda_watches_its_queue() -> None:
    deployment, scaled = k8s("Deployment"), k8s("ScaledObject")
    container = k8s_pod()["containers"][0]
    parses(container["args"], "deploy/k8s worker args")
    device = container["args"][container["args"].index("--device") + 1]
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == queue_for(device), (
        "KEDA must watch the Redis list of the queue the worker serves"
    )
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    env = k8s_env(container)
    unknown = {v for v in env if v.startswith("OVBATCH_")} - SETTINGS_VARS
    assert not unknown, f"deploy/k8s: settings ovbatch/settings.py does not read: {unknown}"
    Settings.from_env(env, cwd=REPO)
    assert env.get("OVBATCH_ALLOWED_ROOTS"), "deploy/k8s: workers need OVBATCH_ALLOWED_ROOTS"


def test_the_kubernetes_keyring_reaches_the_worker_owned_by_it_with_a_mode_the_loader_accepts(tmp_path: Path) -> None:
    pod = k8s_pod()
    uid, gid = image_uid_gid()
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True and (context["runAsUser"], context["runAsGroup"]) == (uid, gid)
    volumes = {v["name"]: v for v in pod["volumes"]}
    keyring = Path(dockerfile()["env"]["OVBATCH_KEYRING"])
    (worker,) = pod["containers"]
    (mount,) = [m for m in worker["volumeMounts"] if m["mountPath"] == str(keyring.parent)]
    assert mount["readOnly"] is True
    # the worker reads a copy in a memory-backed emptyDir, never the Secret volume itself: Secret files
    # belong to root, and under fsGroup they are 0440, which Keyring.load refuses
    assert volumes[mount["name"]]["emptyDir"]["medium"] == "Memory"
    assert not any("secret" in volumes[m["name"]] for m in worker["volumeMounts"])
    with pytest.raises(KeyringError, match="readable by others"):
        assert_the_loader_accepts(0o440, tmp_path)
    (init,) = pod["initContainers"]
    assert init["image"] == worker["image"] and init.get("securityContext", {}).get("runAsUser", uid) == uid
    mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    assert mounts[mount["name"]] == str(keyring.parent)
    (secret_volume,) = [v for v in volumes.values() if "secret" in v]
    assert secret_volume["secret"]["secretName"] == "ovbatch-keyring"
    item = secret_volume["secret"]["items"][0]["path"]
    program, flag, mode, source, target = init["command"]
    assert (program, flag) == ("install", "-m") and target == str(keyring)
    assert source == f"{mounts[secret_volume['name']]}/{item}"
    assert_the_loader_accepts(int(mode, 8), tmp_path)
    # the kubelet would mount its token at /var/run/secrets, which is /run/secrets in the image
    assert pod["automountServiceAccountToken"] is False


def test_kubernetes_workers_and_keda_take_the_redis_password_from_one_secret() -> None:
    env = k8s_env(k8s_pod()["containers"][0])
    broker = urlsplit(env["OVBATCH_BROKER_URL"])
    password = broker.password or ""
    assert password.startswith("secret."), "the broker URL's password must come from a Secret"
    trigger = k8s("ScaledObject")["spec"]["triggers"][0]
    assert trigger["metadata"]["address"] == f"{broker.hostname}:{broker.port}", "KEDA must watch the workers' Redis"
    auth = k8s("TriggerAuthentication", trigger["authenticationRef"]["name"])
    refs = {r["parameter"]: f"secret.{r['name']}.{r['key']}" for r in auth["spec"]["secretTargetRef"]}
    assert refs.get("password") == password, "KEDA must authenticate to Redis with the workers' password"
    for container in k8s_pod()["containers"] + k8s_pod()["initContainers"]:
        for entry in container.get("env", []):
            if SECRET_NAME.search(entry["name"]):
                assert "valueFrom" in entry, f"deploy/k8s: {entry['name']} must come from a Secret"


def test_the_kubernetes_objects_match_the_api_schema() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[dev]'")
    version = kubernetes_validate.latest_version()
    for doc in k8s_docs():
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # a custom resource: no schema ships with kubernetes-validate; the tests above read it
        kubernetes_validate.validate(doc, version, strict=True)


# --- every supervisor --------------------------------------------------------------------------------


def stop_grace_s(env: Mapping[str, str]) -> float:
    """How long a worker with ENV may finish running jobs after SIGTERM."""
    return float(Settings.from_env({k: v for k, v in env.items() if k.startswith("OVBATCH_")}, cwd=REPO).stop_grace_s)


def seconds(text: str) -> float:
    """A compose or systemd duration: 660, 660s, 11m, 1m30s."""
    units = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(min|[smh]?)", str(text))
    assert parts, f"not a duration: {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


def test_every_supervisor_waits_longer_than_the_stop_grace_before_killing_a_worker() -> None:
    for name, service in ours(compose()).items():
        waits = seconds(service.get("stop_grace_period", "10s"))
        assert waits > stop_grace_s(service["environment"]), f"docker-compose.yml {name}: stop_grace_period {waits} s"
    pod = k8s_pod()
    waits = pod["terminationGracePeriodSeconds"]
    assert waits > stop_grace_s(k8s_env(pod["containers"][0])), f"deploy/k8s: terminationGracePeriodSeconds {waits}"
    unit = SYSTEMD_UNIT.read_text()
    waits = seconds(re.search(r"^TimeoutStopSec=(.*)$", unit, re.M).group(1))  # type: ignore[union-attr]
    assert waits > stop_grace_s({}), f"deploy/systemd: TimeoutStopSec {waits} s"


# --- Redis over TLS ----------------------------------------------------------------------------------


def redis_tls_available() -> bool:
    """Whether this redis-server was built with TLS (Debian's is; a plain `make` build is not)."""
    server = shutil.which("redis-server")
    return server is not None and b"SSL_CTX_new" in Path(server).read_bytes()


def make_tls_files(folder: Path) -> None:
    """A CA, and a certificate for localhost that it signed: ca.pem, server.pem, server.key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def issue(name: str, key: Any, issuer: Any, issuer_key: Any, san: list[Any] | None) -> Any:
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=san is None, path_length=None), critical=True)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    pem = serialization.Encoding.PEM
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = issue(
        "ovbatch test CA", ca_key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ovbatch test CA")]), ca_key, None
    )
    san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server = issue("localhost", key, ca.subject, ca_key, san)
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "server.pem").write_bytes(server.public_bytes(pem))
    private = serialization.PrivateFormat.PKCS8
    (folder / "server.key").write_bytes(key.private_bytes(pem, private, serialization.NoEncryption()))


@pytest.mark.skipif(not redis_tls_available(), reason="redis-server with TLS is not installed")
def test_a_rediss_url_with_ssl_cert_reqs_reaches_a_tls_redis_with_no_code_change(tmp_path: Path) -> None:
    """The URL README.md documents works for the Celery broker, its result backend and redis-py."""
    make_tls_files(tmp_path)
    port, password = free_port(), "test-tls-password"
    config = (
        f'port 0\ntls-port {port}\nbind 127.0.0.1\nsave ""\ndir {tmp_path}\nrequirepass {password}\n'
        f"tls-cert-file {tmp_path}/server.pem\ntls-key-file {tmp_path}/server.key\n"
        f"tls-ca-cert-file {tmp_path}/ca.pem\ntls-auth-clients no\n"
    )
    url = f"rediss://:{password}@localhost:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={tmp_path}/ca.pem"
    with running([str(shutil.which("redis-server")), "-"], {}, port, stdin=config):
        settings = Settings.from_env({"OVBATCH_BROKER_URL": url}, cwd=tmp_path)
        assert password not in settings.masked()["broker_url"]
        app = make_app(settings)
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0)
        assert app.backend.client.ping()
        assert redis.Redis.from_url(url, socket_timeout=5).ping()  # as cli/batch.py and workers/main.py connect
        # the certificate is checked: another CA's is refused
        (tmp_path / "other").mkdir()
        make_tls_files(tmp_path / "other")
        with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            redis.Redis.from_url(url.replace(str(tmp_path), str(tmp_path / "other")), socket_timeout=5).ping()
    # rediss:// with no ssl_cert_reqs: Celery's result backend refuses to start (the broker would not check)
    bare = make_app(Settings.from_env({"OVBATCH_BROKER_URL": url.split("?")[0]}, cwd=tmp_path))
    with pytest.raises(ValueError, match="ssl_cert_reqs"):
        _ = bare.backend


# --- systemd -----------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_worker_unit_and_its_command_parses(tmp_path: Path) -> None:
    unit = SYSTEMD_UNIT.read_text()
    exec_start = shlex.split(re.search(r"^ExecStart=(.*)$", unit, re.M).group(1))  # type: ignore[union-attr]
    assert exec_start[0].endswith("/bin/ovbatch")
    parses([a.replace("%i", "0-7") for a in exec_start[1:]], "deploy/systemd ExecStart")
    assert not re.search(r"^Environment=.*(PASSWORD|SECRET|://[^@\s]*:[^@\s]*@)", unit, re.M), "passwords in the unit"
    # verify needs the binary and the user to exist: point them at this machine's, change nothing else
    local = unit.replace(exec_start[0], str(Path(sys.executable).with_name("ovbatch")))
    local = local.replace("User=ovbatch", "User=root")
    local = local.replace("EnvironmentFile=/etc/ovbatch/env", "EnvironmentFile=-/etc/ovbatch/env")
    path = tmp_path / "ovbatch-worker@0-7.service"
    path.write_text(local)
    done = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)
    problems = [line for line in (done.stdout + done.stderr).splitlines() if str(path) in line or "error" in line]
    assert done.returncode == 0 and not problems, f"systemd-analyze verify: {done.stdout}{done.stderr}"
