#!/usr/bin/env python3
"""Lists dependencies that no Rust file of their crate names (part of `make lint`).

For every workspace member, every dependency of its Cargo.toml ([dependencies],
[dev-dependencies], [build-dependencies]) must be named in the crate's own Rust files: as a
path (`name::`), in a `use` or `extern crate`, or as a macro (`name!`), with `-` read as `_`,
anywhere in the crate's directory (its tests may use a normal dependency). A dependency needed
without being named (a feature switch, a linked C library) is listed in the member's Cargo.toml
under [package.metadata.unused-deps] ignored = ["name"].

This reads source text, like cargo-machete: it is fast and needs no build, and it can be
fooled only towards leniency (a name in a comment counts as a use).

An entry of the root [workspace.dependencies] that no member depends on is listed too.

Exit 0 when every dependency is named, 1 with one line per unused one.
"""

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("dependencies", "build-dependencies", "dev-dependencies")


def rust_text(crate: Path) -> str:
    files = sorted(f for f in crate.rglob("*.rs") if "target" not in f.relative_to(crate).parts)
    return "\n".join(f.read_text(encoding="utf-8", errors="replace") for f in files)


def named(ident: str, text: str) -> bool:
    pattern = rf"(?<![\w:]){ident}\s*(::|!)|\b(use|extern\s+crate)\s+{ident}\b"
    return re.search(pattern, text) is not None


def manifest_of(crate: Path) -> dict:
    return tomllib.loads((crate / "Cargo.toml").read_text(encoding="utf-8"))


def unused_in(crate: Path) -> list[str]:
    manifest = manifest_of(crate)
    ignored = set(
        manifest.get("package", {}).get("metadata", {}).get("unused-deps", {}).get("ignored", [])
    )
    text = rust_text(crate)
    found = []
    for section in SECTIONS:
        for name in manifest.get(section, {}):
            if name in ignored:
                continue
            if not named(name.replace("-", "_"), text):
                found.append(f"{crate.name}/Cargo.toml [{section}] {name}")
    return found


def main() -> int:
    workspace = tomllib.loads((ROOT / "Cargo.toml").read_text(encoding="utf-8"))
    members = workspace["workspace"]["members"]
    print(f"unused-deps: checking {len(members)} crates", flush=True)
    unused = [line for m in members for line in unused_in(ROOT / m)]
    depended_on = {
        name for m in members for section in SECTIONS for name in manifest_of(ROOT / m).get(section, {})
    }
    unused += [
        f"Cargo.toml [workspace.dependencies] {name}"
        for name in workspace["workspace"].get("dependencies", {})
        if name not in depended_on
    ]
    for line in unused:
        print(f"unused dependency: {line}")
    if unused:
        print(
            "remove them, or list a dependency needed without being named under "
            "[package.metadata.unused-deps] ignored"
        )
        return 1
    print("unused-deps: every dependency is named")
    return 0


if __name__ == "__main__":
    sys.exit(main())
