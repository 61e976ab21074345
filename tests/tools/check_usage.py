#!/usr/bin/env python3
"""The README's usage block against `evring COMMAND --help`, so the two cannot drift.

    check_usage.py README.md path/to/evring

The block is the first fenced block after the heading that introduces the
`evring` tool: one synopsis per command, continuation lines indented. Each
must equal the synopsis its command prints ("usage: evring ..." and the
indented lines that go on with options), whitespace aside; every command
`evring --help` lists must be in the block, and the block may name no other.
"""
import re
import subprocess
import sys


def norm(s):
    return " ".join(s.split())


def readme_block(path):
    text = open(path, encoding="utf-8").read()
    head = text.index("## Attaching to a live process")
    start = text.index("```", head)
    start = text.index("\n", start) + 1
    end = text.index("```", start)
    entries = {}
    cur = None
    for line in text[start:end].splitlines():
        if line.startswith("evring "):
            cur = line.split()[1]
            entries[cur] = line
        elif line.strip() and cur:
            entries[cur] += " " + line.strip()
    return entries


def help_synopsis(evring, cmd):
    out = subprocess.run([evring, cmd, "--help"], capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    first = next(i for i, l in enumerate(lines) if l.startswith("usage: evring " + cmd))
    syn = lines[first][len("usage: "):]
    for l in lines[first + 1:]:
        if re.match(r"^\s{10,}\[", l):
            syn += " " + l.strip()
        else:
            break
    return syn


def main():
    readme, evring = sys.argv[1], sys.argv[2]
    block = readme_block(readme)
    top = subprocess.run([evring, "--help"], capture_output=True, text=True, check=True).stdout
    listing = top.split("\n\n")[1]  # the commands, between the usage line and what follows
    cmds = [m.group(1) for m in re.finditer(r"^  ([a-z]+) ", listing, re.M)]
    bad = 0
    for c in cmds:
        if c not in block:
            print(f"README: no usage line for `evring {c}`")
            bad += 1
    for c, line in block.items():
        if c.startswith("-"):
            if c not in top:
                print(f"README names `evring {c}`, which `evring --help` does not")
                bad += 1
            continue
        if c not in cmds:
            print(f"README names `evring {c}`, which is no command")
            bad += 1
            continue
        want = norm(help_synopsis(evring, c))
        if norm(line) != want:
            print(f"README:     {norm(line)}\n--help says: {want}")
            bad += 1
    print(f"{len(block) - bad} passed, {bad} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
