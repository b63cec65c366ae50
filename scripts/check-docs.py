#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Checks that the docs hold: every file of this repository that README.md
and docs/*.md name exists, and every command they print that runs one of
our scripts runs as printed (the script is executable).

    scripts/check-docs.py            # exit 1 and a line per problem

A path is a word that starts with one of the repository's top-level
directories (scripts/, tests/, docs/, ...) and names no placeholder
(`<file>`, `*`, `{a,b}`, `...`). Paths under build/ and the fetched
trees are made by the build: not checked. A command is a line of a fenced
code block, or an inline code span, whose first word (after `sudo` and
VAR=value assignments) is a path to one of our files.
"""

import os
import re
import sys

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md"] + sorted(
    os.path.join("docs", f) for f in os.listdir(os.path.join(TOP, "docs"))
    if f.endswith(".md"))
# Directories of this repository a documented path may start with.
ROOTS = tuple(d + "/" for d in sorted(os.listdir(TOP))
              if os.path.isdir(os.path.join(TOP, d))
              and not d.startswith(".") and d != "build")
PATH = re.compile(r"(?<![\w./-])(?:\./)?((?:%s)[^\s`'\"()\[\]|]*)"
                  % "|".join(re.escape(r) for r in ROOTS))
# <file>, *, {a,b}, $VAR, ..., and a component in capitals (TARGET/).
PLACEHOLDER = re.compile(r"[<>*{}$]|\.\.\.|(^|/)[A-Z][A-Z0-9_]+(/|$)")
FENCE = re.compile(r"^\s*(```|~~~)")
SPAN = re.compile(r"`([^`\n]+)`")
ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")


def code_of(text):
    """(line number, code) of every fenced code line, and of every inline
    span of more than one word (a lone path is a mention, not a
    command)."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            yield number, line.strip()
        else:
            for span in SPAN.findall(line):
                if len(span.split()) > 1:
                    yield number, span.strip()


def paths_of(text):
    """(line number, path) of every repository path the text names."""
    for number, line in enumerate(text.splitlines(), 1):
        for match in PATH.finditer(line):
            path = match.group(1).rstrip(".,:;")
            if not PLACEHOLDER.search(path):
                yield number, path


def exists(path):
    """@path is a file or directory of ours, or names a patch by its
    number (`qemu/patches/0015`)."""
    full = os.path.join(TOP, path)
    if os.path.exists(full):
        return True
    folder, name = os.path.split(full)
    return name.isdigit() and os.path.isdir(folder) and any(
        f.startswith(name + "-") for f in os.listdir(folder))


def command_of(code):
    """The script a line of code runs first, or None."""
    words = code.split()
    while words and (words[0] in ("sudo", "$", "#") or
                     ASSIGNMENT.match(words[0])):
        words = words[1:]
    if not words:
        return None
    match = PATH.fullmatch(words[0])
    return match.group(1) if match else None


def check(doc):
    problems = []
    with open(os.path.join(TOP, doc)) as f:
        text = f.read()
    for number, path in paths_of(text):
        if not exists(path):
            problems.append(f"{doc}:{number}: {path}: no such file")
    for number, code in code_of(text):
        script = command_of(code)
        if script and os.path.isfile(os.path.join(TOP, script)) and \
                not os.access(os.path.join(TOP, script), os.X_OK):
            problems.append(f"{doc}:{number}: `{code}`: {script} is not "
                            f"executable")
    return problems


def main():
    problems = [p for doc in DOCS for p in check(doc)]
    for p in problems:
        print(f"check-docs: {p}")
    print(f"check-docs: {len(DOCS)} documents, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
