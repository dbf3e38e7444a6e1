"""The deployment files (Dockerfile, docker-compose.yml, the CI workflow) keep their key
properties. Read as text: no Docker engine, no YAML library; comments never count."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"

SECRET_NAME = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET|CREDENTIAL|API_?KEY|MONGODB_URI", re.I)
URI_WITH_CREDENTIALS = re.compile(r"mongodb(?:\+srv)?://[^\s/@]+@")
PINNED_BASE = re.compile(r"python:3\.11\.\d+-slim-bookworm(?:@sha256:[0-9a-f]{64})?")


# --- Dockerfile --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str
    args: str


def _instructions() -> list[Instruction]:
    """Logical instructions: continuation lines joined, comment lines dropped."""
    result: list[Instruction] = []
    pending: list[str] = []
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        keyword, _, args = " ".join([*pending, line]).partition(" ")
        result.append(Instruction(keyword.upper(), args.strip()))
        pending = []
    assert not pending, "the Dockerfile ends inside a line continuation"
    return result


def _stages() -> list[list[Instruction]]:
    """Each stage from its FROM on (global ARGs before the first FROM are left out)."""
    stages: list[list[Instruction]] = []
    for instruction in _instructions():
        if instruction.keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def _global_args() -> dict[str, str]:
    args: dict[str, str] = {}
    for instruction in _instructions():
        if instruction.keyword == "FROM":
            break
        if instruction.keyword == "ARG":
            name, _, default = instruction.args.partition("=")
            args[name.strip()] = default.strip().strip("\"'")
    return args


def _base_images() -> list[str]:
    """The image of every FROM that is not an earlier stage, ${ARG}s resolved."""
    args = _global_args()
    names: set[str] = set()
    images: list[str] = []
    for stage in _stages():
        words = [w for w in stage[0].args.split() if not w.startswith("--")]
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
        if len(words) == 3 and words[1].lower() == "as":
            names.add(words[2].lower())
        if image.lower() not in names:
            images.append(image)
    return images


def _final_stage() -> list[Instruction]:
    return _stages()[-1]


def _only(stage: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in stage if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword} in the final stage, found {len(found)}"
    return found[0]


def _copy_sources(instruction: Instruction) -> list[str]:
    if instruction.args.startswith("["):
        words = json.loads(instruction.args)
    else:
        words = [w for w in shlex.split(instruction.args) if not w.startswith("--")]
    return [w.rstrip("/") for w in words[:-1]]


def _pip_commands() -> list[str]:
    """Each ``pip install`` / ``pip wheel`` command of every RUN."""
    commands: list[str] = []
    for instruction in _instructions():
        if instruction.keyword == "RUN":
            for part in re.split(r"&&|;|\|\|", instruction.args):
                if re.search(r"\bpip3?\s+(install|wheel)\b", part):
                    commands.append(part.strip())
    return commands


def _is_dependency_install(command: str) -> bool:
    return "-c constraints.txt" in command or "--constraint constraints.txt" in command


def test_dockerfile_is_multi_stage_and_copies_from_a_build_stage() -> None:
    stages = _stages()
    assert len(stages) >= 2
    assert any(i.keyword == "COPY" and i.args.startswith("--from=") for i in _final_stage()), (
        "the final stage should take its virtualenv from a build stage"
    )


def test_base_images_are_slim_python_311_pinned_to_a_patch_release() -> None:
    images = _base_images()
    assert images
    for image in images:
        assert PINNED_BASE.fullmatch(image), f"{image!r} is not python:3.11.<patch>-slim-bookworm"


def test_final_stage_switches_to_a_non_root_user_before_cmd() -> None:
    stage = _final_stage()
    cmd_at = stage.index(_only(stage, "CMD"))
    users = [i.args for i in stage[:cmd_at] if i.keyword == "USER"]
    assert users, "no USER before CMD: the container would run as root"
    user = users[-1].split(":")[0].strip()
    assert user not in {"root", "0", ""}


def test_healthcheck_probes_health_with_python_urllib() -> None:
    check = _only(_final_stage(), "HEALTHCHECK").args
    assert check.upper() != "NONE"
    assert re.search(r"\bCMD\b", check)
    assert re.search(r"['\"]http://127\.0\.0\.1:8000/health['\"]", check)
    assert "urllib.request" in check
    assert "curl" not in check
    assert "wget" not in check


def test_cmd_is_exec_form_running_serve() -> None:
    """The image starts the service the way `make run` does, so forwarding headers are
    trusted only from FORWARDED_ALLOW_IPS there too (uvicorn alone trusts loopback)."""
    argv = json.loads(_only(_final_stage(), "CMD").args)
    assert isinstance(argv, list)
    assert all(isinstance(word, str) for word in argv)
    assert argv[:2] == ["message-metrics", "serve"]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert argv[argv.index("--port") + 1] == "8000"
    assert "--proxy-headers" not in argv


def test_final_stage_exposes_port_8000() -> None:
    exposed = [i.args.split() for i in _final_stage() if i.keyword == "EXPOSE"]
    assert any("8000" in ports or "8000/tcp" in ports for ports in exposed)


def test_dependencies_are_installed_before_the_application_code_is_copied() -> None:
    for stage in _stages():
        code_at = next(
            (
                n
                for n, i in enumerate(stage)
                if i.keyword in {"COPY", "ADD"}
                and not i.args.startswith("--from=")
                and {"graph", "resolvers", "."} & set(_copy_sources(i))
            ),
            None,
        )
        if code_at is None:
            continue
        deps_at = next(
            n for n, i in enumerate(stage) if i.keyword == "RUN" and _is_dependency_install(i.args)
        )
        assert deps_at < code_at, "the code is copied before the dependencies are installed"
        for earlier in stage[:deps_at]:
            if earlier.keyword in {"COPY", "ADD"}:
                assert set(_copy_sources(earlier)) <= {"pyproject.toml", "constraints.txt"}
        return
    raise AssertionError("no stage copies graph/ and resolvers/")


def test_the_application_itself_is_installed_without_dependencies() -> None:
    commands = _pip_commands()
    assert any(_is_dependency_install(c) for c in commands)
    for command in commands:
        if not _is_dependency_install(command):
            assert "--no-deps" in command, f"unpinned dependencies could come in: {command!r}"


def test_no_optional_extras_or_embedded_database_in_the_image() -> None:
    for command in _pip_commands():
        assert "secantus" not in command.lower()
        assert not re.search(r"\[\s*(embedded|dev|bench)", command), command
        assert "optional-dependencies" not in command
    for instruction in _instructions():
        if instruction.keyword in {"COPY", "ADD"}:
            assert ".venv" not in _copy_sources(instruction)


def test_no_secrets_baked_into_env_or_arg() -> None:
    for instruction in _instructions():
        if instruction.keyword == "ENV":
            words = shlex.split(instruction.args)
            names = [w.split("=")[0] for w in words] if "=" in words[0] else words[:1]
        elif instruction.keyword == "ARG":
            names = [instruction.args.split("=")[0]]
        else:
            continue
        for name in names:
            assert not SECRET_NAME.search(name), f"{instruction.keyword} {name} looks secret"
    assert not URI_WITH_CREDENTIALS.search(DOCKERFILE.read_text(encoding="utf-8"))


def test_dockerignore_excludes_local_state_but_not_the_build_inputs() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for excluded in (".venv", ".data", ".git", ".env", ".pytest_cache", "bench/results"):
        assert excluded in patterns, f"{excluded} should be in .dockerignore"
    for needed in ("pyproject.toml", "constraints.txt", "README.md", "graph", "resolvers"):
        assert needed not in patterns, f"{needed} is needed by the build"


# --- YAML, as text ------------------------------------------------------------------------


def _code_lines(path: Path) -> list[str]:
    return [
        line
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def _blocks(path: Path, section: str) -> dict[str, str]:
    """The entries of a top-level mapping (``services:``, ``jobs:``), each as its text."""
    blocks: dict[str, list[str]] = {}
    inside = False
    current: list[str] = []
    for line in _code_lines(path):
        if not line.startswith(" "):
            inside = line.rstrip() == f"{section}:"
            continue
        entry = re.fullmatch(r"  ([\w.-]+):\s*", line)
        if inside and entry:
            current = blocks.setdefault(entry.group(1), [])
        elif inside:
            current.append(line)
    return {name: "\n".join(lines) + "\n" for name, lines in blocks.items()}


def _depends_on(block: str, service: str, condition: str) -> bool:
    pattern = rf"depends_on:\n(?:\s{{6,}}.*\n)*?\s+{service}:\n\s+condition:\s*{condition}\s*\n"
    return re.search(pattern, block) is not None


def _env(block: str, name: str) -> str | None:
    found = re.search(rf"^\s+-?\s*{name}\s*[:=]\s*(.+?)\s*$", block, re.M)
    return found.group(1).strip("\"'") if found else None


def test_compose_runs_mongo_as_a_single_node_replica_set() -> None:
    mongo = _blocks(COMPOSE, "services")["mongo"]
    assert re.search(r"^\s+image:\s*[\"']?mongo:\d+\.\d+[\"']?\s*$", mongo, re.M)
    command = re.search(r"^\s+command:\s*(.+)$", mongo, re.M)
    assert command
    assert "--replSet" in command.group(1)
    assert "rs0" in command.group(1)
    assert "--bind_ip_all" in command.group(1)
    healthcheck = mongo.split("healthcheck:", 1)[1]
    assert "mongosh" in healthcheck
    assert "rs.initiate" in healthcheck
    assert re.search(r"host:\s*['\"]mongo:27017['\"]", healthcheck)


def test_compose_api_reads_the_replica_set_after_mongo_and_seed() -> None:
    api = _blocks(COMPOSE, "services")["api"]
    uri = _env(api, "MONGODB_URI")
    assert uri is not None
    assert uri.startswith("mongodb://mongo:27017/")
    assert "replicaSet=rs0" in uri
    assert "@" not in uri
    assert _env(api, "MONGODB_DATABASE") == "message_metrics"
    assert re.search(r"^\s+-\s*[\"']?8000:8000[\"']?\s*$", api, re.M)
    assert _depends_on(api, "mongo", "service_healthy")
    assert _depends_on(api, "seed", "service_completed_successfully")


def test_compose_seed_runs_once_from_the_api_image_after_mongo() -> None:
    services = _blocks(COMPOSE, "services")
    seed, api = services["seed"], services["api"]
    assert re.search(r"^\s+command:.*message-metrics.*\bseed\b", seed, re.M)
    assert _env(seed, "MONGODB_URI") == _env(api, "MONGODB_URI")
    assert _depends_on(seed, "mongo", "service_healthy")
    image = re.compile(r"^\s+image:\s*(\S+)\s*$", re.M)
    seed_image, api_image = image.search(seed), image.search(api)
    assert seed_image
    assert api_image
    assert seed_image.group(1) == api_image.group(1)
    assert re.search(r"^\s+build:", seed, re.M)
    assert re.search(r"^\s+build:", api, re.M)


def _runs_make_test(block: str) -> bool:
    return re.search(r"^\s+(?:-\s+)?run:\s*make test\s*$", block, re.M) is not None


def _mongodb_versions(block: str) -> set[str]:
    """Versions of the ``mongo`` images of a job, through ``${{ matrix.x }}`` if used."""
    versions: set[str] = set()
    for tag in re.findall(r"\smongo:(\$\{\{[^}]*\}\}|[\w.]+)", block):
        variable = re.fullmatch(r"\$\{\{\s*matrix\.([\w-]+)\s*\}\}", tag)
        if variable is None:
            versions.add(tag)
            continue
        values = re.search(rf"^\s+{variable.group(1)}:\s*\[(.*)\]\s*$", block, re.M)
        assert values, f"matrix.{variable.group(1)} is not a one-line list"
        versions |= {v.strip().strip("\"'") for v in values.group(1).split(",")}
    return versions


def test_workflow_runs_make_test_on_the_embedded_database() -> None:
    jobs = _blocks(WORKFLOW, "jobs").values()
    assert any(_runs_make_test(job) and "MONGODB_URI" not in job for job in jobs)


def test_workflow_runs_make_test_on_mongodb_7_and_8_replica_sets() -> None:
    """Real MongoDB as a one-node replica set, so the change-stream path runs there too."""
    jobs = [job for job in _blocks(WORKFLOW, "jobs").values() if _runs_make_test(job)]
    on_mongodb = [job for job in jobs if "MONGODB_URI" in job]
    assert on_mongodb
    versions = set().union(*(_mongodb_versions(job) for job in on_mongodb))
    assert any(v.split(".")[0] == "7" for v in versions), versions
    assert any(v.split(".")[0] == "8" for v in versions), versions
    for job in on_mongodb:
        uri = _env(job, "MONGODB_URI")
        assert uri == "mongodb://localhost:27017/?directConnection=true"
        assert "--replSet rs0" in job and "rs.initiate(" in job
        assert "isWritablePrimary" in job  # make test starts once the node is primary


def test_workflow_sets_up_python_311_with_a_pip_cache_on_constraints() -> None:
    jobs = [job for job in _blocks(WORKFLOW, "jobs").values() if _runs_make_test(job)]
    assert jobs
    for job in jobs:
        assert "uses: actions/setup-python@" in job
        assert re.search(r"^\s+python-version:\s*[\"']?3\.11[\"']?\s*$", job, re.M)
        assert re.search(r"^\s+cache:\s*pip\s*$", job, re.M)
        assert re.search(r"^\s+cache-dependency-path:\s*constraints\.txt\s*$", job, re.M)
