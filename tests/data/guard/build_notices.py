#!/usr/bin/env python3
"""Benign records of text addressed to a person: automated notices, UI
messages and FAQ answers.

    pip download mailman==3.3.10 django==5.2.19 django-allauth==65.22.1 --no-deps -d /tmp/notices
    (cd /tmp/notices && apt-get download debian-faq=11.1)
    python3 tests/data/guard/build_notices.py /tmp/notices

appends to `dev.jsonl` and `validation.jsonl` (next to this script) benign
records marked `"added": "notices"` (records already marked so are replaced,
so running it twice gives the same files). Each file is checked against its
SHA-256, so the output is the same on any machine.

A review of the learned detector found that it scored ordinary notices
("Please note that this response was generated automatically by our
system"), support answers and FAQ paragraphs above its threshold: text
that speaks to its reader in the imperative, about messages, accounts,
systems and requests, which neither part had much of. Three published
kinds of it:

- **Mailman 3's notice templates** (`mailman/templates/en/*.txt`, GPL-3.0):
  the mails a list server sends its members and owners (held posts,
  bounces, welcomes, confirmations), as the templates read, `$name`
  placeholders included.
- **UI message catalogs** (the English `.po` files of Django, its contrib
  apps and django-allauth; BSD-3-Clause and MIT): form errors, prompts,
  confirmations and the bodies of account e-mails, their message ids in
  file order, grouped into records of at most 1,200 characters (what a tool
  that reads a catalog or a rendered page hands over).
- **The Debian FAQ** (`debian-faq` 11.1, `debian-faq.en.txt.gz`, read with
  `dpkg-deb`; GPL-2.0-or-later): one question (or sub-question) and its
  answer per record, up to the next question, chapter heading or rule line
  (whole paragraphs, at most 2,400 characters).

The split is fixed before any record is built: within each kind, the
records in file order alternate between the parts, development first (the
catalogs' records, each catalog in path order; the FAQ's questions), at
most `PER_PART` of each kind per part.
"""

import gzip
import hashlib
import io
import pathlib
import re
import subprocess
import sys
import tarfile
import zipfile

from guard_parts import Alternating, replace_and_report

PER_PART = {"mailman": 15, "catalog": 40, "faq": 45}
FILES = {
    "mailman-3.3.10-py3-none-any.whl": "0f63ed38efa938357074e993d6a9b2d81bedaab92f5b3ecdd519890259893f37",
    "django-5.2.19-py3-none-any.whl": "5965d974a5218a2b68a11dd1276434707f23886525c23f0598eccedaf4f4ca00",
    "django_allauth-65.22.1-py3-none-any.whl": "08f7a3ddbd5ff7f1000d685dee9c0678d0da2057e18bed473a6eb2de18bd04e4",
    "debian-faq_11.1_all.deb": "427426e0cfa6888622fc1d72631071cb4b5a1f86ccde722e7820bcef284de5d0",
}
MIN_CHARS = 80
CATALOG_CHARS = 1200
FAQ_CHARS = 2400


def checked(src, name):
    path = src / name
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != FILES[name]:
        raise SystemExit(f"{path}: SHA-256 differs from the one this script was run on")
    return path


def mailman(wheel):
    with zipfile.ZipFile(wheel) as z:
        for name in sorted(z.namelist()):
            if name.startswith("mailman/templates/en/") and name.endswith(".txt"):
                yield z.read(name).decode("utf-8").strip(), "benign-notice:email:mailman"


def po_messages(text):
    """The message ids (and plural ids) of a `.po` file, in order, without
    the empty header id."""
    out, current = [], None
    for line in text.splitlines():
        m = re.match(r'^(msgid|msgid_plural) "(.*)"$', line)
        if m:
            if current:
                out.append(current)
            current = m.group(2)
            continue
        m = re.match(r'^"(.*)"$', line)
        if m and current is not None:
            current += m.group(1)
            continue
        if current:
            out.append(current)
        current = None
    if current:
        out.append(current)
    escapes = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}
    return [re.sub(r"\\(.)", lambda e: escapes.get(e.group(1), e.group(0)), m) for m in out]


def catalog_records(messages):
    record = ""
    for message in messages:
        if record and len(record) + len(message) + 1 > CATALOG_CHARS:
            yield record
            record = ""
        record += message + "\n"
    if record:
        yield record


def catalogs(django, allauth):
    for wheel in (django, allauth):
        with zipfile.ZipFile(wheel) as z:
            for name in sorted(z.namelist()):
                if "/locale/en/LC_MESSAGES/" in name and name.endswith(".po"):
                    for record in catalog_records(po_messages(z.read(name).decode("utf-8"))):
                        yield record.strip(), "benign-ui:catalog:" + name.split("/")[0]


def faq(deb):
    data = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.extractfile("./usr/share/doc/debian/FAQ/debian-faq.en.txt.gz")
        text = gzip.decompress(member.read()).decode("utf-8")
    # A question's number (1.2. or 3.1.1.) is followed by a no-break space;
    # a chapter's heading and a rule line end the question before them.
    pieces = re.split(r"\n(?=\d+(?:\.\d+)+\.\s|Chapter\s\d+\.|-{20,}\n)", text)
    for entry in pieces:
        if not re.match(r"\d+(?:\.\d+)+\.\s", entry):
            continue
        out = ""
        for para in entry.split("\n\n"):
            para = "\n".join(line.strip() for line in para.splitlines()).strip()
            if not para:
                continue
            if len(out) + len(para) + 2 > FAQ_CHARS:
                break
            out += para + "\n\n"
        yield out.strip(), "benign-faq:text:debian-faq"


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    src = pathlib.Path(sys.argv[1])
    paths = {name: checked(src, name) for name in FILES}
    kinds = [
        ("mailman", mailman(paths["mailman-3.3.10-py3-none-any.whl"])),
        (
            "catalog",
            catalogs(
                paths["django-5.2.19-py3-none-any.whl"],
                paths["django_allauth-65.22.1-py3-none-any.whl"],
            ),
        ),
        ("faq", faq(paths["debian-faq_11.1_all.deb"])),
    ]
    records = {"dev": [], "validation": []}
    seen = set()
    for kind, texts in kinds:
        parts = Alternating("notices", PER_PART[kind])
        for text, source in texts:
            if len(text) < MIN_CHARS or text in seen:
                continue
            seen.add(text)
            parts.add(text, source)
        for part in records:
            records[part] += parts.records[part]
    replace_and_report("notices", "notice, UI and FAQ", records)


if __name__ == "__main__":
    main()
