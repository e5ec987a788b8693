#!/usr/bin/env python3
"""Fails (exit 1) if any module's main sources have a file-level dependency cycle, and names it.

A file depends on another file of the same module if it imports one of its types (or a type
nested in it) or, within one package, names its top-level type outside comments and string
literals. A sealed type's `permits` clause is not a use: it closes the set of its implementations,
which depend on it, and a reader sees it as one type with its cases (so the clause is left out).
Packages are held to the same rule: no two packages of a module use each other, round any loop.
Cycles are the strongly connected components of that graph with more than one file.
Dependencies between modules run one way already (Maven refuses a cycle of modules).

Usage: check-cycles.py [REPO]   (run by `make test`)
"""
import os
import re
import sys

MODULES = ["durable", "journal-dev", "reclaimer", "nbd", "fs"]
TOKEN = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.S)


def strip(src):
    """The source without comments, string and character literals (text blocks too)."""
    src = re.sub(r'"""[\s\S]*?"""', '""', src)
    return TOKEN.sub(lambda m: " " if m.group(0).startswith("/") else '""', src)


def files_of(root):
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            if n.endswith(".java"):
                path = os.path.join(d, n)
                with open(path, encoding="utf-8") as f:
                    code = strip(f.read())
                pkg = re.search(r'^\s*package\s+([\w.]+)\s*;', code, re.M)
                out[(pkg.group(1) if pkg else "") + "." + n[:-5]] = (path, code)
    return out


def graph(files):
    edges = {}
    by_pkg = {}
    for fq in files:
        pkg, name = fq.rsplit(".", 1)
        by_pkg.setdefault(pkg, set()).add(name)
    for fq, (_, code) in files.items():
        pkg, name = fq.rsplit(".", 1)
        deps = set()
        for imp in re.findall(r'^\s*import\s+(?:static\s+)?([\w.]+)(?:\.\*)?\s*;', code, re.M):
            parts = imp.split(".")
            for i in range(len(parts), 0, -1):  # the longest prefix that is a file: a nested type's outer file
                cand = ".".join(parts[:i])
                if cand in files:
                    deps.add(cand)
                    break
        body = re.sub(r'^\s*(package|import)\s[^;]*;', "", code, flags=re.M)
        body = re.sub(r'\bpermits\s+[\w.\s,]+?(?=\{)', "", body)
        words = set(re.findall(r'\b[A-Z]\w*\b', body))
        for other in by_pkg[pkg]:
            if other != name and other in words:
                deps.add(pkg + "." + other)
        deps.discard(fq)
        edges[fq] = deps
    return edges


def cycles(edges):
    """Tarjan's strongly connected components of more than one node."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main():
    repo = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    found = 0
    for m in MODULES:
        src = os.path.join(repo, m, "src", "main", "java")
        if not os.path.isdir(src):
            print(f"check-cycles: no sources at {src}")
            sys.exit(2)
        files = files_of(src)
        edges = graph(files)
        packages = {}
        for a, targets in edges.items():
            packages.setdefault(a.rsplit(".", 1)[0], set()).update(
                b.rsplit(".", 1)[0] for b in targets if b.rsplit(".", 1)[0] != a.rsplit(".", 1)[0])
        for comp in cycles(packages):
            found += 1
            print(f"check-cycles: {m}: a cycle of {len(comp)} packages: {', '.join(comp)}")
        for comp in cycles(edges):
            found += 1
            short = [c.rsplit(".", 1)[1] for c in comp]
            links = [f"{a.rsplit('.', 1)[1]} -> {b.rsplit('.', 1)[1]}" for a in comp for b in sorted(edges[a]) if b in comp]
            print(f"check-cycles: {m}: a cycle of {len(comp)} files: {', '.join(short)}  ({'; '.join(links)})")
    if found:
        print(f"check-cycles: {found} import cycle(s) of files or packages; dependencies within a module must run one way")
        sys.exit(1)
    print("check-cycles: no import cycle of files or packages in " + ", ".join(MODULES))


if __name__ == "__main__":
    main()
