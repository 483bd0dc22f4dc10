#!/usr/bin/env python3
"""Benign records from the AWS CLI's command examples.

    pip download awscli==1.46.3 --no-deps -d /tmp/awscli
    python3 tests/data/guard/build_cli_docs.py /tmp/awscli/awscli-1.46.3-py3-none-any.whl

appends to `dev.jsonl` and `validation.jsonl` (next to this script) benign
records marked `"added": "cli-docs"` (records already marked so are replaced,
so running it twice gives the same files). The wheel is checked against its
SHA-256, so the output is the same on any machine.

A record is the opening of one example page (`awscli/examples/SERVICE/
COMMAND.rst`; whole paragraphs, 300 to 2,400 characters): what a tool that
reads documentation hands an agent — "To list your queues", a command line,
its JSON output, short imperatives about credentials, keys and policies. The
learned detector's false positives on this machine's files were mostly such
pages, which neither part had. The split is fixed before any record is
built: the services, in name order, are shuffled with a fixed seed and
alternate between the parts (no service is in both), one page per service
(the first of its pages shuffled with the same seed), at most 60 per part.
The AWS CLI is Apache-2.0.
"""

import hashlib
import pathlib
import random
import sys
import zipfile

from build_crate_docs import opening
from guard_parts import Alternating, replace_and_report

SEED = 20261126
PER_PART = 60
WHEEL_SHA256 = "94c561c1b1b2cf0978ec8d87d956c26c807555438593eec29ea90602b9518cfb"
PREFIX = "awscli/examples/"


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    wheel = pathlib.Path(sys.argv[1])
    if hashlib.sha256(wheel.read_bytes()).hexdigest() != WHEEL_SHA256:
        raise SystemExit(f"{wheel}: not awscli 1.46.3's wheel (SHA-256 differs)")
    pages = {}
    with zipfile.ZipFile(wheel) as z:
        for name in sorted(z.namelist()):
            if name.startswith(PREFIX) and name.endswith(".rst") and name.count("/") == 3:
                service = name.split("/")[2]
                pages.setdefault(service, []).append((name, z.read(name).decode("utf-8")))
    rng = random.Random(SEED)
    services = sorted(pages)
    rng.shuffle(services)
    parts = Alternating("cli-docs", PER_PART)
    for service in services:
        candidates = pages[service]
        rng.shuffle(candidates)
        for name, text in candidates:
            text = opening(text)
            if text is None:
                continue
            parts.add(text, f"benign-cli-docs:{name[len(PREFIX):]}:awscli-1.46.3")
            break
    replace_and_report("cli-docs", "AWS CLI example", parts.records)


if __name__ == "__main__":
    main()
