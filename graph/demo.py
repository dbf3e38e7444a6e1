"""The demo tokens file: the embedded database's demo tokens in plain text, for the operator.

The database stores only SHA-256 hashes, so a token can be printed again at the next start
only if it was kept somewhere: here, in the embedded data folder (git-ignored), readable by
its owner alone (mode 0600). Never logged.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from resolvers.seed import DemoTokens

__all__ = ["FILE_NAME", "read_tokens", "tokens_file", "write_tokens"]

FILE_NAME = "demo-tokens.json"


def tokens_file(data_dir: Path) -> Path:
    """Where the demo tokens of the embedded database in ``data_dir`` are kept."""
    return data_dir / FILE_NAME


def read_tokens(path: Path) -> DemoTokens | None:
    """The kept tokens; None when the file is missing or not one we wrote."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    account, instances = raw.get("account"), raw.get("instances")
    if not isinstance(account, str) or not isinstance(instances, dict):
        return None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in instances.items()):
        return None
    return DemoTokens(account=account, instances=dict(instances))


def write_tokens(path: Path, tokens: DemoTokens) -> None:
    """Replace the file at once (a reader never sees half of it), mode 0600 from the start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # also when a stale temporary file had another mode
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump({"account": tokens.account, "instances": tokens.instances}, out, indent=2)
        out.write("\n")
    os.replace(temporary, path)
