#!/usr/bin/env python3
"""Writes the seed corpora of tests/fuzz/corpus/ from the framing corpus,
the shipped configurations and a few key resolver inputs.

Run from anywhere: python3 tests/fuzz/make_seeds.py. Seeds it writes are
named seed-*; inputs found by fuzzing (crash-*, regress-*, or libFuzzer's
hash names) are kept as they are.
"""
import pathlib
import re

here = pathlib.Path(__file__).resolve().parent
root = here.parent.parent
corpus = here / "corpus"


def unescape(text):
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c != "\\":
            out += c.encode("utf-8")
            i += 1
            continue
        e = text[i + 1]
        if e == "x":
            out.append(int(text[i + 2:i + 4], 16))
            i += 4
            continue
        out += {"r": b"\r", "n": b"\n", "t": b"\t", "0": b"\0", "s": b" ", "\\": b"\\"}[e]
        i += 2
    return bytes(out)


def cases(path):
    name, data = None, b""
    for line in path.read_text(encoding="utf-8").splitlines():
        word, _, rest = line.partition(" ")
        if word == "case":
            name, data = rest, b""
        elif word == "send":
            data += unescape(rest)
        elif word == "end":
            yield name, data


def reset(target):
    d = corpus / target
    d.mkdir(parents=True, exist_ok=True)
    for f in d.glob("seed-*"):
        f.unlink()
    return d


def write(d, name, data):
    (d / ("seed-" + re.sub(r"[^A-Za-z0-9_.-]", "_", name))).write_bytes(data)


d = reset("request")
for name, data in cases(root / "tests/data/framing/requests.corpus"):
    write(d, name, data)

d = reset("response")
for name, data in cases(root / "tests/data/framing/responses.corpus"):
    write(d, name, data)

d = reset("config")
for f in sorted((root / "conf").rglob("*.yaml")) + sorted((root / "tests/data/config").glob("*.yaml")):
    write(d, f.relative_to(root).as_posix().replace("/", "_"), f.read_bytes())

# key_resolver: flags byte (bit 0 proxies resolver, bits 1-2 fallback peer,
# bit 3 org header present, bit 4 Authorization present), then
# peer \n path \n org \n authorization \n x-forwarded-for.
d = reset("key_resolver")
resolver_seeds = {
    "org_trusted": b"\x08127.0.0.1\n/api\nacme\n\n",
    "org_untrusted": b"\x08203.0.113.9\n/api\nacme\n\n",
    "org_bad_chars": b"\x08::1\n/api\n  ac me \n\n",
    "org_long": b"\x09::1\n/x\n" + b"a" * 129 + b"\n\n",
    "bearer": b"\x10203.0.113.9\n/api\n\nBearer abc.def-ghi_jkl~mno+pqr/stu==\n",
    "bearer_hmac": b"\x11203.0.113.9\n/api\n\nbearer \t tok== \t\n",
    "bearer_bad": b"\x10203.0.113.9\n/api\n\nBearer a b\n",
    "basic": b"\x10203.0.113.9\n/api\n\nBasic dXNlcjpwYXNz\n",
    "ip_path_with_org": b"\x18127.0.0.1\n/registry/a/b\nacme\nBearer t\n",
    "xff_untrusted_peer": b"\x00203.0.113.9\n/\n\n\n1.2.3.4, 5.6.7.8",
    "xff_chain": b"\x0110.0.0.1\n/\n\n\n198.51.100.1, 10.0.0.2 ,[2001:db8::1]:443, 10.0.0.3",
    "xff_garbage": b"\x0110.0.0.1\n/\n\n\n1.2.3.4, unknown, 10.9.9.9",
    "xff_ports": b"\x01127.0.0.1\n/\n\n\n1.2.3.4:5678,,[::ffff:1.2.3.4]",
    "xff_all_trusted": b"\x01::1\n/health\n\n\n10.0.0.1, 127.0.0.1",
    "ipv6_peer": b"\x002001:db8::1\n/\n\n\n",
    "mapped_peer": b"\x00::ffff:192.0.2.1\n/\n\n\n",
}
for name, data in resolver_seeds.items():
    write(d, name, data)

print("seeds written to", corpus)
