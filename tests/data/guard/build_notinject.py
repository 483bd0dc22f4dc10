#!/usr/bin/env python3
"""Benign records from NotInject, a published over-defence benchmark.

    python3 tests/data/guard/build_notinject.py INJECGUARD_GIT

appends to `dev.jsonl` and `validation.jsonl` (next to this script) benign
records marked `"added": "notinject"` (records already marked so are
replaced, so running it twice gives the same files). INJECGUARD_GIT is a git
directory of github.com/leolee99/InjecGuard (MIT; the paper's repository,
which holds the dataset also published as `leolee99/NotInject` on Hugging
Face); the files are read at the pinned commit and checked against their
SHA-256.

NotInject (Li et al., "InjecGuard: Benchmarking and Mitigating Over-defense
in Prompt Injection Guardrail Models", 2024) is 339 benign sentences written
to hold the words injections use ("ignore", "bypass", "roleplay",
"unrestricted", "override"): 113 each with one, two and three such words, in
four kinds (common queries, technique queries, virtual creation,
multilingual). A guard that reacts to the words rather than to an
injection flags them. In a tool's output they are what a forum post, a
ticket, a search result or a chat export quotes.

The split is fixed before any record is built: within each file and kind,
the sentences alternate between the parts in file order, development first.
Each record is the sentence alone, as written.
"""

import hashlib
import json
import sys

import build_split
from guard_parts import Parts, replace_and_report

TAG = "notinject"
COMMIT = "588f555cbc2d592b3fbc9b6f462d844b8bcddb4d"
FILES = {
    "NotInject_one": "69b535596d95102424e9c5946944feb4f2d596687eb8213f2ecad75478e5ffdd",
    "NotInject_two": "6043d94e75b48d8e7682d25dc79eaf45359e1e561ce520e3b8fd5625a91060c6",
    "NotInject_three": "ef01eff0d761d2e34571b3fdbcec08c30cd93efe8d0e1a2eb5c2baeb1873b070",
}
KINDS = {
    "Common Queries": "common",
    "Technique Queries": "technique",
    "Virtual Creation": "creation",
    "Multilingual": "multilingual",
}


def build(repo):
    parts = Parts(TAG)
    for name, sha in FILES.items():
        path = f"datasets/{name}.json"
        data = build_split.git_show(repo, path, COMMIT, text=False)
        if hashlib.sha256(data).hexdigest() != sha:
            raise SystemExit(f"{COMMIT}:{path}: not the pinned file (SHA-256 differs)")
        turns = {}
        for record in json.loads(data.decode("utf-8")):
            kind = KINDS[record["category"]]
            turn = turns.get(kind, 0)
            turns[kind] = turn + 1
            part = "dev" if turn % 2 == 0 else "validation"
            words = name.rsplit("_", 1)[1]
            parts.add(part, record["prompt"], False, f"benign-notinject:{kind}:{words}")
    return parts.records


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    replace_and_report(TAG, "NotInject", build(build_split.git_dir(sys.argv[1])))


if __name__ == "__main__":
    main()
