"""deploy/ and docker-compose.yml stay in step with the code.

No Docker engine or Kubernetes runs here, so the containers themselves are not started. What can
drift without one is checked: every command line in them parses with the real CLI, every
environment variable is one Settings reads, the queue KEDA watches is the one workers serve, the
keyring path matches the image, and systemd accepts the unit file.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from ovbatch.cli.main import cli
from ovbatch.workers.app import queue_for
from tests.conftest import REPO

SETTINGS_VARS = set(re.findall(r"OVBATCH_[A-Z0-9_]+", (REPO / "ovbatch" / "settings.py").read_text()))
AWS_VARS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}


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
    return {**json_line, "env": env, "copied": copied}


def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_the_image_copies_every_package_folder_and_runs_a_valid_command() -> None:
    image = dockerfile()
    assert image["ENTRYPOINT"] == ["ovbatch"]
    parses(image["CMD"], "deploy/Dockerfile CMD")
    copied = {src for src, _ in image["copied"]}
    packages = {"ovbatch", "cli", "tasks", "workers"}
    assert packages <= copied, f"deploy/Dockerfile does not COPY {packages - copied}"
    assert set(image["env"]) <= SETTINGS_VARS, f"unknown settings in the image: {set(image['env']) - SETTINGS_VARS}"


def test_every_compose_service_of_the_image_runs_a_valid_command_with_known_settings() -> None:
    spec = compose()
    keyring = dockerfile()["env"]["OVBATCH_KEYRING"]
    ours = {name: s for name, s in spec["services"].items() if "build" in s}
    assert {"worker-cpu", "worker-gpu", "cli"} <= set(ours)
    for name, service in ours.items():
        assert service["build"]["dockerfile"] == "deploy/Dockerfile", name
        assert (REPO / service["build"]["context"] / service["build"]["dockerfile"]).is_file(), name
        if "command" in service:
            parses(service["command"], f"docker-compose.yml service {name}")
        env = set(service["environment"])
        unknown = {v for v in env if v.startswith("OVBATCH_")} - SETTINGS_VARS
        assert not unknown, f"docker-compose.yml service {name}: settings ovbatch does not read: {unknown}"
        assert env <= SETTINGS_VARS | AWS_VARS, f"service {name}: unexpected variables {env - SETTINGS_VARS - AWS_VARS}"
        assert "OVBATCH_KEYRING" not in env, f"service {name}: the keyring is a file secret, not a variable"
        assert [s["target"] for s in service["secrets"]] == [keyring], f"service {name}: keyring not at {keyring}"
    broker = ours["worker-cpu"]["environment"]["OVBATCH_BROKER_URL"]
    assert broker.startswith("redis://redis:6379/"), "workers must use the compose Redis service"
    assert {"redis", "minio"} <= set(ours["worker-cpu"]["depends_on"])


def test_the_kubernetes_worker_runs_a_valid_command_and_keda_watches_its_queue() -> None:
    docs = list(yaml.safe_load_all((REPO / "deploy" / "k8s" / "worker-cpu.yaml").read_text()))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    scaled = next(d for d in docs if d["kind"] == "ScaledObject")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    parses(container["args"], "deploy/k8s worker args")
    device = container["args"][container["args"].index("--device") + 1]
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == queue_for(device), (
        "KEDA must watch the Redis list of the queue the worker serves"
    )
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    mount = container["volumeMounts"][0]
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    path = f"{mount['mountPath']}/{volume['secret']['items'][0]['path']}"
    assert path == dockerfile()["env"]["OVBATCH_KEYRING"], f"the keyring secret is mounted at {path}"
    assert mount["readOnly"] is True


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_worker_unit_and_its_command_parses(tmp_path: Path) -> None:
    unit = (REPO / "deploy" / "systemd" / "ovbatch-worker@.service").read_text()
    exec_start = shlex.split(re.search(r"^ExecStart=(.*)$", unit, re.M).group(1))  # type: ignore[union-attr]
    assert exec_start[0].endswith("/bin/ovbatch")
    parses([a.replace("%i", "0-7") for a in exec_start[1:]], "deploy/systemd ExecStart")
    # verify needs the binary and the user to exist: point them at this machine's, change nothing else
    local = unit.replace(exec_start[0], str(Path(sys.executable).with_name("ovbatch")))
    local = local.replace("User=ovbatch", "User=root")
    local = local.replace("EnvironmentFile=/etc/ovbatch/env", "EnvironmentFile=-/etc/ovbatch/env")
    path = tmp_path / "ovbatch-worker@0-7.service"
    path.write_text(local)
    done = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)
    problems = [line for line in (done.stdout + done.stderr).splitlines() if str(path) in line or "error" in line]
    assert done.returncode == 0 and not problems, f"systemd-analyze verify: {done.stdout}{done.stderr}"
