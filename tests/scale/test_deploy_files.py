"""The deployment files in ``deploy/`` and ``docs/deployment.md`` stay true to the code: every manifest
parses, every ``charter`` command they run is accepted by the real CLI (command, subcommand and options,
parsed by Click without running), and every setting they name exists."""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

DEPLOY = REPO / "deploy"
K8S = sorted((DEPLOY / "k8s").glob("*.yaml"))
UNITS = sorted((DEPLOY / "systemd").glob("*.service")) + sorted((DEPLOY / "systemd").glob("*.timer"))
DOC = REPO / "docs" / "deployment.md"


def parse_charter_command(argv: list[str]) -> None:
    """Parse ``charter …`` arguments with the real Click command tree; raises on anything it rejects."""
    import typer

    from charter.cli import app

    assert argv and Path(argv[0]).name == "charter", argv
    cmd: Any = typer.main.get_command(app)
    ctx = cmd.make_context("charter", list(argv[1:]), resilient_parsing=False)
    while hasattr(cmd, "get_command"):  # a group: descend into the named subcommand
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        if not rest:
            break
        sub = cmd.get_command(ctx, rest[0])
        assert sub is not None, f"no command {rest[0]!r} in {' '.join(argv)}"
        ctx = sub.make_context(rest[0], list(rest[1:]), parent=ctx, resilient_parsing=False)
        cmd = sub


def k8s_commands(doc: dict[str, Any]) -> list[list[str]]:
    found: list[list[str]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "containers" in node:
                for c in node["containers"]:
                    found.append([*c.get("command", []), *c.get("args", [])])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    return found


def test_there_are_manifests_for_every_job() -> None:
    names = {p.name for p in K8S} | {p.name for p in UNITS}
    assert {"server.yaml", "sync-cronjob.yaml", "gate-watch.yaml", "secret.yaml"} <= names
    assert {
        "charter.service",
        "charter-sync.service",
        "charter-sync.timer",
        "charter-gate-watch.service",
    } <= names


@pytest.mark.parametrize("path", K8S, ids=lambda p: p.name)
def test_kubernetes_manifests_parse_and_run_real_commands(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs
    for doc in docs:
        assert {"apiVersion", "kind"} <= set(doc), path
        if doc["kind"] == "Kustomization":
            for res in doc["resources"]:
                assert (path.parent / res).is_file(), res
            continue
        assert doc["metadata"]["name"]
        for argv in k8s_commands(doc):
            parse_charter_command(argv)
        if doc["kind"] in ("Deployment",):
            spec = doc["spec"]
            assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    kinds = {d["kind"] for d in docs}
    if path.name == "sync-cronjob.yaml":
        assert kinds == {"CronJob"}
    if path.name == "secret.yaml":
        assert kinds == {"Secret"}


def test_every_workload_mounts_the_keys_and_reads_the_database_url_from_a_secret() -> None:
    workloads = [
        d
        for p in K8S
        for d in yaml.safe_load_all(p.read_text())
        if d and d["kind"] in ("Deployment", "CronJob", "Job")
    ]
    assert len(workloads) >= 4
    for w in workloads:
        text = yaml.safe_dump(w)
        assert "secretName: charter-keys" in text and "name: charter-env" in text, w["metadata"]["name"]


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_systemd_units_parse_and_run_real_commands(path: Path) -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(path.read_text())
    assert "Unit" in unit
    if path.suffix == ".timer":
        assert "OnCalendar" in unit["Timer"]
        assert (path.parent / (path.stem + ".service")).is_file()
        return
    service = unit["Service"]
    argv = shlex.split(service["ExecStart"])
    if Path(argv[0]).name == "charter":
        parse_charter_command(argv)
        assert service["EnvironmentFile"] == "/etc/charter/charter.env"


def test_the_environment_file_names_only_real_settings() -> None:
    from charter.server._app import ServerSettings

    text = (DEPLOY / "systemd" / "charter.env.example").read_text()
    names = re.findall(r"^([A-Z_]+)=", text, flags=re.M)
    assert "CHARTER_DATABASE_URL" in names
    fields = {f"CHARTER_SERVER_{f.upper()}" for f in ServerSettings.__dataclass_fields__}
    src = "\n".join(p.read_text() for p in (REPO / "src" / "charter").rglob("*.py"))
    for name in names:
        if name.startswith("CHARTER_SERVER_"):
            assert name in fields, name
        elif name.startswith("CHARTER_"):
            assert f'"{name}"' in src, f"{name} is read nowhere in the code"


def test_the_commands_in_the_deployment_guide_are_real() -> None:
    text = DOC.read_text()
    blocks = re.findall(r"```(?:sh|bash|console)\n(.*?)```", text, flags=re.S)
    lines = [
        line.strip()
        for block in blocks
        for line in block.replace("\\\n", " ").splitlines()
        if line.strip().startswith("charter ")
    ]
    assert len(lines) >= 3
    for line in lines:
        parse_charter_command(shlex.split(line.split(" #", 1)[0]))
    for path in (*K8S, *UNITS):
        assert path.name in text, f"docs/deployment.md does not mention {path.name}"


def test_the_checker_can_fail() -> None:
    from typer._click.exceptions import UsageError

    with pytest.raises(UsageError):
        parse_charter_command(["charter", "serve", "--wokers", "2"])
    with pytest.raises(UsageError):
        parse_charter_command(["charter", "gate", "--interval", "1h", "--wach"])
    with pytest.raises(AssertionError):
        parse_charter_command(["charter", "database", "upgrade"])
