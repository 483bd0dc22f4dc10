#!/usr/bin/env python3
"""Benign records from the READMEs of the crates Fabric builds with.

    cargo fetch --locked
    python3 tests/data/guard/build_crate_docs.py ~/.cargo/registry/src/index.crates.io-*/

appends to `dev.jsonl` and `validation.jsonl` (next to this script) one benign
record per crate, marked `"added": "crate-docs"` (records already marked so are
replaced, so running it twice gives the same files). The crates are those of
the repository's `Cargo.lock` (name and version pinned there), so the output
is reproducible on any machine that fetched them.

A record is the opening of a crate's `README.md` (whole paragraphs, 300 to
2,400 characters): what a tool that reads a file or a package page hands an
agent, full of badges, CI links with query strings, code and shell commands.
Only crates whose `Cargo.toml` names an MIT, Apache-2.0, BSD, ISC, Zlib or
Unicode licence are read. The split is fixed before any record is built: the
crates, in name order, are shuffled with a fixed seed and alternate between the
parts; at most 60 per part.
"""

import pathlib
import random
import re
import sys

from guard_parts import Alternating, replace_records

SEED = 20261127
PER_PART = 60
ALLOWED = re.compile(r"\b(MIT|Apache-2\.0|BSD-[23]-Clause|ISC|Zlib|Unicode-3\.0|Unicode-DFS-2016)\b")


def locked_crates(lock):
    crates = []
    name = version = None
    registry = False
    for line in lock.splitlines() + ["[[package]]"]:
        if line.startswith("[[package]]"):
            if name and version and registry:
                crates.append((name, version))
            name = version = None
            registry = False
        elif line.startswith('name = "'):
            name = line.split('"')[1]
        elif line.startswith('version = "'):
            version = line.split('"')[1]
        elif line.startswith("source = ") and "registry+" in line:
            registry = True
    return sorted(set(crates))


def licence(crate_dir):
    try:
        text = (crate_dir / "Cargo.toml").read_text(encoding="utf-8")
    except OSError:
        return None
    m = re.search(r'^license\s*=\s*"([^"]*)"', text, re.M)
    return m.group(1) if m else None


def opening(readme):
    """Whole paragraphs from the start, 300 to 2,400 characters."""
    out = ""
    for para in readme.replace("\r\n", "\n").split("\n\n"):
        if len(out) + len(para) + 2 > 2400:
            break
        out += para + "\n\n"
    out = out.strip("\n")
    return out if len(out) >= 300 else None


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    src = pathlib.Path(sys.argv[1])
    here = pathlib.Path(__file__).parent
    lock = (here / ".." / ".." / ".." / "Cargo.lock").resolve().read_text()
    crates = locked_crates(lock)
    random.Random(SEED).shuffle(crates)
    parts = Alternating("crate-docs", PER_PART)
    for name, version in crates:
        crate_dir = src / f"{name}-{version}"
        lic = licence(crate_dir)
        if not lic or not ALLOWED.search(lic):
            continue
        try:
            readme = (crate_dir / "README.md").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        text = opening(readme)
        if text is None:
            continue
        parts.add(text, f"benign-crate-docs:{name}:{version}")
    for name, n in replace_records("crate-docs", parts.records).items():
        print(f"{name}: {n} crate README records")

if __name__ == "__main__":
    main()
