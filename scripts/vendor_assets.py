"""Vendor the browser files our pages load into graph/static/vendor/ (``make assets``).

The npm packages are pinned in scripts/assets/package.json and its package-lock.json.
This script installs exactly that lockfile (``npm ci``) in a temporary folder, copies the
built files the pages load, unchanged, with the license of every package whose code they
hold, and writes graph/static/vendor/VERSIONS.json (package, version, license, and the
SHA-256 of each copied file). The result is committed, so serving needs no npm.

Upgrading: change a version in scripts/assets/package.json, run
``python scripts/vendor_assets.py --upgrade`` (``npm install``, which rewrites the
lockfile), check GraphiQL and the dashboard in a browser (``make test`` runs the browser
tests), and commit package.json, package-lock.json and graph/static/vendor/ together.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["VENDORED", "Vendored", "main"]

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "scripts" / "assets"
VENDOR = ROOT / "graph" / "static" / "vendor"


@dataclass(frozen=True)
class Vendored:
    """One npm package: the files copied into ``VENDOR / folder``, and the packages whose
    license files go beside them (itself first, then what its bundles contain)."""

    package: str
    folder: str
    files: tuple[str, ...]
    licenses: tuple[str, ...]


VENDORED = (
    Vendored("react", "react", ("umd/react.production.min.js",), ("react",)),
    Vendored("react-dom", "react-dom", ("umd/react-dom.production.min.js",), ("react-dom",)),
    Vendored(
        "graphiql",
        "graphiql",
        ("graphiql.min.js", "graphiql.min.css"),
        # The UMD build bundles GraphiQL's React components and graphql-js.
        ("graphiql", "@graphiql/react", "graphql"),
    ),
    Vendored(
        "@graphiql/plugin-explorer",
        "graphiql-plugin-explorer",
        ("dist/index.umd.js", "dist/style.css"),
        # The package ships no license file of its own (MIT, the GraphiQL monorepo's,
        # whose license graphiql carries); its bundle holds graphiql-explorer.
        ("graphiql", "@graphiql/plugin-explorer/node_modules/graphiql-explorer"),
    ),
    Vendored("chart.js", "chart.js", ("dist/chart.umd.min.js",), ("chart.js",)),
)

_LICENSE_NAMES = ("LICENSE", "LICENSE.md", "LICENSE.txt", "license")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--upgrade",
        action="store_true",
        help="npm install (rewrites package-lock.json from package.json) instead of npm ci",
    )
    args = parser.parse_args(argv)
    npm = shutil.which("npm")
    if npm is None:
        print("npm not found: install Node.js and npm to vendor the assets", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="mm-assets-") as temporary:
        work = Path(temporary)
        modules = _install(npm=npm, work=work, upgrade=args.upgrade)
        versions = _copy_all(modules)
    (VENDOR / "VERSIONS.json").write_text(json.dumps(versions, indent=2) + "\n")
    for name, entry in versions.items():
        print(f"{name} {entry['version']}: {', '.join(entry['files'])}")
    return 0


def _install(*, npm: str, work: Path, upgrade: bool) -> Path:
    """The lockfile's packages in ``work/node_modules``; with ``upgrade``, the lockfile is
    first rewritten from package.json and copied back."""
    shutil.copy2(ASSETS / "package.json", work / "package.json")
    lock = ASSETS / "package-lock.json"
    if lock.exists():
        shutil.copy2(lock, work / "package-lock.json")
    flags = ["--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"]
    command = [npm, "install" if upgrade else "ci", *flags]
    subprocess.run(command, cwd=work, check=True)
    if upgrade:
        shutil.copy2(work / "package-lock.json", lock)
    return work / "node_modules"


def _copy_all(modules: Path) -> dict[str, dict[str, object]]:
    """Replace VENDOR's contents with every ``VENDORED`` file and license."""
    if VENDOR.exists():
        shutil.rmtree(VENDOR)
    versions: dict[str, dict[str, object]] = {}
    for item in VENDORED:
        versions[item.package] = _copy(item, modules)
    return versions


def _copy(item: Vendored, modules: Path) -> dict[str, object]:
    source = modules / item.package
    manifest = json.loads((source / "package.json").read_text())
    target = VENDOR / item.folder
    target.mkdir(parents=True)
    files: dict[str, str] = {}
    for relative in item.files:
        copied = target / Path(relative).name
        shutil.copy2(source / relative, copied)
        files[copied.name] = hashlib.sha256(copied.read_bytes()).hexdigest()
    licenses = [_copy_license(modules / package, target) for package in item.licenses]
    return {
        "version": manifest["version"],
        "license": manifest.get("license"),
        "folder": item.folder,
        "files": files,
        "licenses": licenses,
    }


def _copy_license(package: Path, target: Path) -> str:
    """Copy ``package``'s license file as ``LICENSE.<name>``; fails when it has none."""
    name = json.loads((package / "package.json").read_text())["name"]
    for candidate in _LICENSE_NAMES:
        if (package / candidate).is_file():
            copied = target / f"LICENSE.{name.replace('@', '').replace('/', '-')}"
            shutil.copy2(package / candidate, copied)
            return copied.name
    raise SystemExit(f"{name} has no license file among {_LICENSE_NAMES}")


if __name__ == "__main__":
    sys.exit(main())
