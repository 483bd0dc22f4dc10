"""Shared by the scripts that add a source to both parts of the guard's
labelled sets (`build_agentdojo.py`, `build_crate_docs.py`)."""

import json
import pathlib

HERE = pathlib.Path(__file__).parent


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
