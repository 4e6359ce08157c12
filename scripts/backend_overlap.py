#!/usr/bin/env python3
"""How much the two storage backends repeat each other, module by module.

For each module the SQLite and PostgreSQL crates both have, prints the
share of the SQLite module's code lines that also appear in the PostgreSQL
module (identical after trimming), and how many of its lines sit in runs of
six or more consecutive lines identical in both. Blank lines, comments and
lines of lone punctuation are not counted.

    scripts/backend_overlap.py            # the working tree
    scripts/backend_overlap.py REV        # a commit, e.g. HEAD~3
"""
import re
import subprocess
import sys

MODULES = ["audit", "jobs", "keys", "lib", "maintenance", "rows", "schema", "slos", "tenants", "workflows"]
RUN = 6


def source(rev, path):
    if rev is None:
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError:
            return ""
    shown = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
    return shown.stdout if shown.returncode == 0 else ""


def code_lines(text, signatures=True):
    """Code lines; without `signatures`, function signatures are left out too:
    the trait methods both backends implement must repeat theirs."""
    lines = []
    in_signature = False
    for line in text.splitlines():
        line = line.strip()
        if not signatures and re.match(r"(pub(\(crate\))? )?(async )?fn ", line):
            in_signature = True
        if in_signature:
            in_signature = not line.endswith("{") and not line.endswith(";")
            continue
        if not line or line.startswith("//") or re.fullmatch(r"[\s{}()\[\];,.?]*", line):
            continue
        lines.append(line)
    return lines


def in_runs(a, b):
    """Lines of `a` inside runs of at least RUN lines that also occur, in order, in `b`."""
    covered = [False] * len(a)
    for i in range(len(a)):
        for j in range(len(b)):
            k = 0
            while i + k < len(a) and j + k < len(b) and a[i + k] == b[j + k]:
                k += 1
            if k >= RUN:
                for n in range(i, i + k):
                    covered[n] = True
    return sum(covered)


def main():
    rev = sys.argv[1] if len(sys.argv) > 1 else None
    totals = [0] * 5
    print(f"{'module':<12} {'sqlite lines':>12} {'identical':>10} {'in runs>=6':>10} {'runs, no signatures':>20}")
    for module in MODULES:
        a_text = source(rev, f"crates/steadfast-sqlite/src/{module}.rs")
        b_text = source(rev, f"crates/steadfast-postgres/src/{module}.rs")
        a, b = code_lines(a_text), code_lines(b_text)
        if not a or not b:
            continue
        other = set(b)
        shared = sum(1 for line in a if line in other)
        runs = in_runs(a, b)
        bodies = in_runs(code_lines(a_text, signatures=False), code_lines(b_text, signatures=False))
        row = [len(a), shared, runs, bodies]
        totals = [t + r for t, r in zip(totals, row + [0])]
        print(f"{module:<12} {len(a):>12} {shared:>5} {100 * shared / len(a):>3.0f}% {runs:>10} {bodies:>20}")
    lines, shared, runs, bodies, _ = totals
    print(f"{'all':<12} {lines:>12} {shared:>5} {100 * shared / lines:>3.0f}% {runs:>10} {bodies:>20}")


if __name__ == "__main__":
    main()
