#!/usr/bin/env python3
"""An independent verifier of Fabric audit exports, written from docs/AUDIT.md.

Usage: verify.py EXPORT.jsonl [--checkpoint NOTE --pubkey KEY.pub]
Prints "OK: N records ..." or "FAIL: first bad record S: KIND: ..." (exit 1).
Needs: pip install blake3 cryptography
"""
import base64
import hashlib
import json
import struct
import sys

import blake3

FIELDS = {
    "seq", "time_unix_us", "invocation_id", "caller", "session", "tool", "component_digest",
    "policy_digest", "arguments_digest", "output_digest", "outcome", "error", "denials",
    "guard_flags", "fuel_used", "duration_us", "arguments", "output", "prev_hash", "hash",
}
# Added later: records written before they existed lack them.
LATER = {"trace_id", "span_id"}


class Bad(Exception):
    def __init__(self, seq, kind, detail):
        super().__init__(f"first bad record {seq}: {kind}: {detail}")
        self.seq, self.kind = seq, kind


def hex32(value):
    if not isinstance(value, str) or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError("not 64 lower-case hex digits")
    return bytes.fromhex(value)


def field(tag, value):
    return bytes([tag]) + struct.pack(">I", len(value)) + value


def u64(n):
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n < 2**64:
        raise ValueError("not a u64")
    return struct.pack(">Q", n)


def text(s):
    if not isinstance(s, str):
        raise ValueError("not a string")
    return s.encode("utf-8")


def hexn(value, n):
    if not isinstance(value, str) or len(value) != 2 * n or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"not {2 * n} lower-case hex digits")
    return bytes.fromhex(value)


def encode(r):
    if not FIELDS <= set(r) <= FIELDS | LATER:
        raise ValueError(f"fields differ: {sorted((set(r) - LATER) ^ FIELDS)}")
    out = b"fabric-audit\x00\x01"
    out += field(1, hex32(r["prev_hash"]))
    out += field(2, u64(r["seq"]))
    out += field(3, u64(r["time_unix_us"]))
    out += field(4, text(r["invocation_id"]))
    for tag, key in ((5, "caller"), (6, "session")):
        if r[key] is not None:
            out += field(tag, text(r[key]))
    out += field(7, text(r["tool"]))
    for tag, key in ((8, "component_digest"), (9, "policy_digest")):
        if r[key] is not None:
            out += field(tag, hex32(r[key]))
    out += field(10, hex32(r["arguments_digest"]))
    if r["output_digest"] is not None:
        out += field(11, hex32(r["output_digest"]))
    out += field(12, text(r["outcome"]))
    if r["error"] is not None:
        out += field(13, text(r["error"]))
    for d in r["denials"]:
        if not isinstance(d, dict) or set(d) != {"kind", "target", "reason"}:
            raise ValueError("a denial's fields are kind, target and reason")
        value = b""
        for part in (d["kind"], d["target"], d["reason"]):
            b = text(part)
            value += struct.pack(">I", len(b)) + b
        out += field(14, value)
    for flag in r["guard_flags"]:
        out += field(15, text(flag))
    out += field(16, u64(r["fuel_used"]))
    out += field(17, u64(r["duration_us"]))
    for tag, key in ((18, "arguments"), (19, "output")):
        if r[key] is not None:
            out += field(tag, text(r[key]))
    for tag, key, n in ((20, "trace_id", 16), (21, "span_id", 8)):
        if r.get(key) is not None:
            out += field(tag, hexn(r[key], n))
    return out


def no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("a key appears twice")
    return dict(pairs)


def read(path):
    records = []
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                if line.strip(b" \t\n\r\x0c"):  # ASCII whitespace, as Rust reads it
                    # Every record of an export ends with a newline.
                    records.append(ValueError("the last line does not end with a newline"))
                break
            try:
                records.append(json.loads(line, object_pairs_hook=no_duplicates))
            except ValueError as e:
                records.append(e)
    return records


def verify(records, checkpoint=None):
    prev = bytes(32)
    hashes = []
    for i, r in enumerate(records):
        if isinstance(r, Exception) or not isinstance(r, dict):
            raise Bad(i, "altered", "record does not parse")
        try:
            computed = blake3.blake3(encode(r)).digest()
            stated = hex32(r["hash"])
            link = hex32(r["prev_hash"])
        except (ValueError, KeyError, TypeError) as e:
            raise Bad(i, "altered", str(e))
        # Its content first: an edited seq is an alteration.
        if computed != stated:
            raise Bad(i, "altered", "its content does not match its hash")
        seq = r.get("seq")
        if seq != i:
            later = any(isinstance(x, dict) and x.get("seq") == i for x in records[i:])
            if later or (isinstance(seq, int) and seq < i):
                raise Bad(i, "reordered", f"record {seq} stands where record {i} belongs")
            raise Bad(i, "missing", f"the next record is {seq}")
        if link != prev:
            raise Bad(i - 1, "altered", f"record {i} chains to a different hash")
        prev = stated
        hashes.append(stated)
    if checkpoint is not None:
        size, head = checkpoint
        if size > len(hashes):
            raise Bad(len(hashes), "truncated", f"the checkpoint has {size} records, the log {len(hashes)}")
        if size > 0 and hashes[size - 1] != head:
            raise Bad(size - 1, "altered", "history rewritten: does not end in the checkpoint's hash "
                      "(the change is in this record or an earlier one)")
    return len(hashes), hashes[-1].hex() if hashes else None


def read_checkpoint(note_path, pubkey_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    name, key_id_hex, key_b64 = open(pubkey_path).read().strip().split("+", 2)
    raw = base64.b64decode(key_b64)
    assert raw[0] == 1 and len(raw) == 33, "not an Ed25519 verifier key"
    key_id = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    assert key_id.hex() == key_id_hex, "verifier key id mismatch"
    note = open(note_path, encoding="utf-8").read()
    body, signatures = note.split("\n\n", 1)
    body += "\n"
    origin, size, head = body.split("\n")[:3]
    assert origin == name, "checkpoint origin is not the key's name"
    for line in signatures.splitlines():
        if not line.startswith("\u2014 "):
            continue
        sig_name, blob_b64 = line[2:].split(" ", 1)
        blob = base64.b64decode(blob_b64)
        if sig_name == name and blob[:4] == key_id:
            Ed25519PublicKey.from_public_bytes(raw[1:]).verify(blob[4:], body.encode())  # raises if invalid
            return int(size), base64.b64decode(head)
    raise ValueError("no signature by this key")


def main(argv):
    args = argv[1:]
    checkpoint = None
    if "--checkpoint" in args:
        note = args[args.index("--checkpoint") + 1]
        if "--pubkey" not in args:
            print(f"FAIL: {note} is present but its verifier key is not: pass --pubkey FILE")
            return 1
        pub = args[args.index("--pubkey") + 1]
        try:
            checkpoint = read_checkpoint(note, pub)
        except Exception as e:  # any failure to verify the signature
            print(f"FAIL: {note}: signature invalid ({e})")
            return 1
    try:
        count, head = verify(read(args[0]), checkpoint)
    except Bad as e:
        print(f"FAIL: {e}")
        return 1
    print(f"OK: {count} records" + (f", head {count - 1} {head}" if head else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
