#!/usr/bin/env python3
"""Print a deb822 apt entry for <codename>-backports derived from the machine's
own Debian source entry (same URIs and Signed-By), so no mirror host is ever
written by us. Usage: backports-source.py CODENAME"""
import glob
import sys


def stanzas(text):
    cur = {}
    for line in text.splitlines():
        if not line.strip():
            if cur:
                yield cur
            cur = {}
            continue
        if line.lstrip().startswith("#") or ":" not in line:
            continue
        key, _, val = line.partition(":")
        cur[key.strip().lower()] = val.strip()
    if cur:
        yield cur


def from_deb822(codename):
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for st in stanzas(open(path).read()):
            if codename in st.get("suites", "").split() and "deb" in st.get("types", "").split():
                return st.get("uris"), st.get("signed-by")
    return None


def from_one_line(codename):
    paths = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list"))
    for path in paths:
        try:
            lines = open(path).read().splitlines()
        except OSError:
            continue
        for line in lines:
            words = line.split()
            if len(words) >= 3 and words[0] == "deb":
                opts = []
                if words[1].startswith("["):
                    while not words[1].endswith("]"):
                        opts.append(words.pop(1))
                    opts.append(words.pop(1))
                signed = None
                for o in " ".join(opts).strip("[]").split():
                    if o.startswith("signed-by="):
                        signed = o.split("=", 1)[1]
                if words[2] == codename:
                    return words[1], signed
    return None


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: backports-source.py CODENAME")
    codename = sys.argv[1]
    found = from_deb822(codename) or from_one_line(codename)
    if not found or not found[0]:
        sys.exit(f"backports-source: no Debian apt entry for suite '{codename}' found in /etc/apt")
    uris, signed = found
    print("Types: deb")
    print(f"URIs: {uris}")
    print(f"Suites: {codename}-backports")
    print("Components: main")
    if signed:
        print(f"Signed-By: {signed}")


if __name__ == "__main__":
    main()
