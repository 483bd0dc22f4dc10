"""Shared by the scripts that add a source to both parts of the guard's
labelled sets (every `build_*.py` here but `build_dev_set.py` and
`build_split.py`, which write the parts' first records)."""

import json
import pathlib
import sys

HERE = pathlib.Path(__file__).parent


class Parts:
    """The records a source gives each part, in order, each text once and
    none longer than 6000 characters; `records` is what `replace_records`
    takes."""

    def __init__(self, tag):
        self.tag = tag
        self.records = {"dev": [], "validation": []}
        self.texts = set()

    def add(self, part, text, injected, source):
        if len(text) > 6000 or text in self.texts:
            return
        self.texts.add(text)
        self.records[part].append(
            {"text": text, "injected": injected, "source": source, "added": self.tag}
        )


def replace_records(tag, records):
    """Replaces the records marked `"added": tag` in `dev.jsonl` and
    `validation.jsonl` with `records["dev"]` and `records["validation"]`
    (at the end of each file; every other line stays as it was). Returns the
    number written per file name."""
    written = {}
    for part, name in [("dev", "dev.jsonl"), ("validation", "validation.jsonl")]:
        path = HERE / name
        kept = [
            line
            for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("added") != tag
        ]
        new = [json.dumps(r, ensure_ascii=True) for r in records[part]]
        path.write_text("\n".join(kept + new) + "\n")
        written[name] = len(new)
    return written


class Alternating:
    """Benign records dealt to the parts in turn, development first, at most
    `per_part` each (a record past a full part is dropped, and its turn
    still counts); `records` is what `replace_records` takes."""

    def __init__(self, tag, per_part):
        self.tag, self.per_part, self.turn = tag, per_part, 0
        self.records = {"dev": [], "validation": []}

    def add(self, text, source):
        part = "dev" if self.turn % 2 == 0 else "validation"
        self.turn += 1
        if len(self.records[part]) < self.per_part:
            self.records[part].append({"text": text, "injected": False, "source": source, "added": self.tag})


def run(tag, label, build, usage):
    """The command line of a script whose one argument is the source's
    directory: `build(that path)` gives the records, written as
    `replace_records(tag, …)`; prints what each part received."""
    if len(sys.argv) != 2:
        raise SystemExit(usage)
    replace_and_report(tag, label, build(pathlib.Path(sys.argv[1])))


def replace_and_report(tag, label, records):
    """`replace_records(tag, records)`, then prints what each part received."""
    for name, n in replace_records(tag, records).items():
        part = records["dev" if name == "dev.jsonl" else "validation"]
        inj = sum(r["injected"] for r in part)
        print(f"{name}: {n} {label} records ({inj} injected, {n - inj} benign)")
