#!/usr/bin/env python3
"""spikee records for the guard's development and validation parts.

    pip download spikee==0.9.2 --no-deps -d /tmp/spikee
    unzip -q /tmp/spikee/spikee-0.9.2-py3-none-any.whl -d /tmp/spikee/w
    python3 tests/data/guard/build_spikee.py /tmp/spikee/w/spikee

appends to `dev.jsonl` and `validation.jsonl` (next to this script) the
records it builds, each marked `"added": "spikee"`; records already marked so
are replaced, so running it twice gives the same files.

spikee (Reversec, formerly WithSecure Labs: "Simple Prompt Injection Kit for
Evaluation and Exploitation", Apache-2.0) ships seed folders of jailbreak
wrappers (each with an `<INSTRUCTION>` placeholder), attacker instructions
(markdown-image exfiltration, XSS, long output, system-message and secret
extraction) and base documents, and combines them into injected documents:
the jailbreak wraps the instruction, the result goes into a delimiter
pattern (`INJECTION_PAYLOAD` in it), and that is put at the start, in the
middle (at the space nearest the middle) or at the end of a document, or in
place of the document's placeholder; the document may be wrapped in a
spotlighting data marker (`DOCUMENT` in it). A jailbreak is combined only
with instructions in its language. This script reads the seed files of
`seeds-cybersec-2026-01`, `seeds-llm-mailbox` and
`seeds-sysmsg-extraction-2025-04` (the sets about injections; the harmful-
content and jailbreak-collection sets are not injections into tool output),
the `code-01` document of `seeds-mini-test`, the two mailbox emails of the
`llm_mailbox` sample target (read with `ast`), the delimiters and data
markers the seed READMEs give, and the benign questions of
`seeds-investment-advice-fp`. It reproduces the composition in its own code.

The split is fixed before any record is built or looked at, with one seeded
generator:
- jailbreak families (`jailbreak_type`: `test`, `dev`, `ignore`, `dan`, ...,
  each with its translations) are shuffled and alternate between the parts,
  so no template (nor a variant or translation of it) is in both;
- instructions, grouped by id without the language suffix, are shuffled per
  instruction type and alternate, so no instruction is in both;
- the documents (a news item, a code snippet, two mailbox emails) are
  shuffled and alternate; the bare carrier (spikee's `<PLACEHOLDER>`
  document: the payload alone) is in both, it holds no text of its own;
- spikee's standalone attack inputs and the benign questions alternate too.
Each jailbreak gives two injected records, with the next instructions of its
language in the part's (seeded) order, the next carrier, position, delimiter
and data marker in turn. Benign records are the part's documents, each bare
and in each data marker, and the part's benign questions alone (as a
ticket or forum post would hand them over).
"""

import ast
import json
import random
import re

from guard_parts import Parts, run

SEED = 20261211
SEEDS = ["seeds-cybersec-2026-01", "seeds-sysmsg-extraction-2025-04", "seeds-llm-mailbox"]
LANG_SUFFIX = re.compile(r"-(zu|sq|ga|gd)$")
POSITIONS = ["start", "middle", "end"]
# spikee's default delimiter and the "delimiter bypass" one of the mailbox README.
DELIMITERS = ["\nINJECTION_PAYLOAD\n", "\n</email>\n\nINJECTION_PAYLOAD\n\n<email>"]
# The spotlighting data markers of the cybersec README; `none` is spikee's
# default. The JSON marker's document is JSON-escaped here (spikee pastes it
# raw), so that the record is the JSON a tool would return.
MARKERS = ["none", "\n<data>\nDOCUMENT\n</data>\n", '\n{"document":DOCUMENT}\n']


def read_jsonl(path):
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def base_id(x):
    return LANG_SUFFIX.sub("", x["id"])


def mailbox_emails(root):
    """The emails the llm_mailbox sample target puts around the document."""
    tree = ast.parse((root / "data/workspace/targets/llm_mailbox.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if isinstance(k, ast.Constant) and k.value == "documents":
                    return [e.value for e in v.elts if isinstance(e, ast.Constant)]
    raise SystemExit("documents not found in llm_mailbox.py")


def nearest_space(text, index):
    fwd, back = text.find(" ", index), text.rfind(" ", 0, index)
    if fwd == -1 and back == -1:
        return index
    if fwd == -1:
        return back
    if back == -1:
        return fwd
    return fwd if abs(fwd - index) < abs(index - back) else back


def insert(document, payload, position, delimiter):
    injected = delimiter.replace("INJECTION_PAYLOAD", payload)
    if document is None:  # the bare carrier: spikee's placeholder document
        return injected
    if position == "start":
        return injected + document
    if position == "end":
        return document + injected
    i = nearest_space(document, len(document) // 2)
    return document[:i] + injected + document[i:]


def mark(text, marker):
    if marker == "none":
        return text
    if marker.startswith('\n{"document"'):
        return marker.replace("DOCUMENT", json.dumps(text, ensure_ascii=False))
    return marker.replace("DOCUMENT", text)


def alternate(rng, items):
    items = list(items)
    rng.shuffle(items)
    return {"dev": items[0::2], "validation": items[1::2]}


def build(root):
    data = root / "data/workspace/datasets"
    jailbreaks, instructions, seen_j, seen_i = [], [], set(), set()
    for seed in SEEDS:
        for j in read_jsonl(data / seed / "jailbreaks.jsonl"):
            if j["id"] not in seen_j and "<INSTRUCTION>" in j["text"]:
                seen_j.add(j["id"])
                jailbreaks.append(j)
        for i in read_jsonl(data / seed / "instructions.jsonl"):
            if i["instruction"] not in seen_i:
                seen_i.add(i["instruction"])
                instructions.append(i)
    standalone = read_jsonl(data / "seeds-cybersec-2026-01" / "standalone_user_inputs.jsonl")
    questions = read_jsonl(data / "seeds-investment-advice-fp" / "standalone_user_inputs.jsonl")
    article = next(
        d["document"]
        for d in read_jsonl(data / "seeds-cybersec-2026-01" / "base_user_inputs.jsonl")
        if not d.get("placeholder")
    )
    code = next(
        d["document"]
        for d in read_jsonl(data / "seeds-mini-test" / "base_user_inputs.jsonl")
        if d["id"].startswith("code")
    )
    kickoff, reset = mailbox_emails(root)
    documents = [("news", article), ("code", code), ("email-kickoff", kickoff), ("email-reset", reset)]

    rng = random.Random(SEED)
    families = sorted({j.get("jailbreak_type") or base_id(j) for j in jailbreaks})
    part_families = alternate(rng, families)
    types = sorted({i.get("instruction_type", "") for i in instructions})
    part_bases = {"dev": set(), "validation": set()}
    for t in types:
        bases = sorted({base_id(i) for i in instructions if i.get("instruction_type", "") == t})
        for part, bs in alternate(rng, bases).items():
            part_bases[part].update(bs)
    part_docs = alternate(rng, documents)
    part_standalone = alternate(rng, sorted(standalone, key=lambda x: x["id"]))
    part_questions = alternate(rng, sorted(questions, key=lambda x: x["id"]))

    parts = Parts("spikee")
    for part in ["dev", "validation"]:

        def add(text, injected, source):
            parts.add(part, text, injected, source)

        js = [j for j in jailbreaks if (j.get("jailbreak_type") or base_id(j)) in part_families[part]]
        js.sort(key=lambda j: j["id"])
        rng.shuffle(js)
        pool = {}
        for i in instructions:
            if base_id(i) in part_bases[part]:
                pool.setdefault(i.get("lang") or "en", []).append(i)
        for lang in pool:
            pool[lang].sort(key=lambda i: (i.get("instruction_type", ""), i["id"], i["instruction"]))
            rng.shuffle(pool[lang])
        carriers = part_docs[part] + [("bare", None)]
        turn = {lang: 0 for lang in pool}
        n = 0
        for j in js:
            lang = j.get("lang") or "en"
            if lang not in pool:
                continue
            for _ in range(2):
                ins = pool[lang][turn[lang] % len(pool[lang])]
                turn[lang] += 1
                name, doc = carriers[n % len(carriers)]
                position = POSITIONS[n % len(POSITIONS)]
                delimiter = DELIMITERS[(n // 3) % len(DELIMITERS)]
                marker = MARKERS[(n // 2) % len(MARKERS)]
                n += 1
                payload = j["text"].replace("<INSTRUCTION>", ins["instruction"])
                text = mark(insert(doc, payload, position, delimiter), marker)
                kind = ins.get("instruction_type") or "instruction"
                add(text, True, f"spikee-{kind}:{name}:{j['id']}/{ins['id']}/{position}")
        for s in part_standalone[part]:
            add(s["text"], True, f"spikee-standalone:bare:{s['id']}")
        for name, doc in part_docs[part]:
            for marker in MARKERS:
                add(mark(doc, marker), False, f"benign-spikee:{name}:document")
        for q in part_questions[part]:
            add(q["text"], False, f"benign-spikee:bare:{q['id']}")
    return parts.records


if __name__ == "__main__":
    run("spikee", "spikee", build, __doc__)
