#!/usr/bin/env python3
"""The module graph of a crate's src/, and a check that it has no cycle.

    scripts/module-graph.py [SRC_DIR]          fails (exit 1) naming the modules of each cycle
    scripts/module-graph.py --print [SRC_DIR]  prints each module with the modules it uses

A module is a file (`trace/agent.rs` is `trace::agent`, `resolver/mod.rs` is `resolver`). An
edge is any path into another module of the crate, in a `use` (trees expanded) or written out
in code (`crate::host::since_boot()`, `super::capture::...`). Unit tests (`#[cfg(test)] mod
tests`, at the end of a file by this project's convention) are left out: a test may use what
sits above its module. A child's use of its parent (`use super::Workload` in `resolver::pods`)
is not an edge: a parent holds what its children share.

Why a script and not a crate: the check needs paths, not types, and runs in a second with no
build; rustc has no stable output of a crate's module uses.
"""
import os
import re
import sys


def strip(src):
    """The source without comments, strings and char literals: paths in them are not uses."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif src.startswith("/*", i):
            depth = 0
            while i < n:
                if src.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif src.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                    if depth == 0:
                        break
                else:
                    i += 1
        elif c in "rb" and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")) and (
            m := re.match(r'b?r(#*)"', src[i:])
        ):
            end = '"' + m.group(1)
            j = src.find(end, i + m.end())
            i = n if j < 0 else j + len(end)
            out.append('""')
        elif c == '"':
            i += 1
            while i < n and src[i] != '"':
                i += 2 if src[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'" and (m := re.match(r"'(\\[^']*|[^\\'])'", src[i:])):
            i += m.end()
            out.append("' '")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand(tree):
    """The paths of a use tree: `crate::{a, b::{c, d}}` → crate::a, crate::b::c, crate::b::d."""
    tree = tree.strip()
    brace = tree.find("{")
    if brace < 0:
        return [re.sub(r"\s+as\s+\w+$", "", tree)]
    prefix = tree[:brace].strip().rstrip(":")
    items, current, depth = [], "", 0
    for ch in tree[brace + 1 : tree.rfind("}")]:
        depth += (ch == "{") - (ch == "}")
        if ch == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += ch
    items.append(current)
    paths = []
    for item in filter(str.strip, items):
        for path in expand(item):
            paths.append(prefix if path == "self" else f"{prefix}::{path}")
    return paths


def modules(src_dir):
    """Module path → file, for every file of the library (not main.rs or bin/)."""
    found = {}
    for dirpath, _, files in os.walk(src_dir):
        for name in files:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, src_dir)
            if not name.endswith(".rs") or rel in ("lib.rs", "main.rs") or rel.startswith("bin/"):
                continue
            parts = rel[:-3].split("/")
            if parts[-1] == "mod":
                parts.pop()
            found["::".join(parts)] = path
    return found


def graph(src_dir):
    mods = modules(src_dir)

    def owner(segments):
        for end in range(len(segments), 0, -1):
            name = "::".join(segments[:end])
            if name in mods:
                return name
        return None

    edges = {m: set() for m in mods}
    for module, path in mods.items():
        with open(path, encoding="utf-8") as f:
            code = re.split(r"#\[cfg\(test\)\]\s*mod tests\b", strip(f.read()))[0]
        here = module.split("::")
        # `self::` and `super::` are relative to the module a file defines.
        paths = [p for u in re.findall(r"\buse\s+([^;]+);", code) for p in expand(u)]
        paths += re.findall(r"\b(?:crate|super|self)(?:::\w+)+", code)
        for p in paths:
            segments = p.split("::")
            if segments[0] == "crate":
                target = segments[1:]
            elif segments[0] == "super":
                base = here[:-1]
                while segments and segments[0] == "super":
                    segments = segments[1:]
                target = base + segments
            elif segments[0] == "self":
                target = here + segments[1:]
            else:
                continue
            to = owner(target)
            if to and to != module and not module.startswith(to + "::"):
                edges[module].add(to)
    return edges


def cycles(edges):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def main(args):
    show = "--print" in args
    args = [a for a in args if a != "--print"]
    src_dir = args[0] if args else os.path.join(os.path.dirname(__file__), "..", "userspace", "src")
    edges = graph(src_dir)
    if show:
        for module in sorted(edges):
            print(f"{module} -> {' '.join(sorted(edges[module])) or '(nothing)'}")
    found = cycles(edges)
    for component in found:
        uses = [f"{m} -> {t}" for m in component for t in sorted(edges[m]) if t in component]
        print(f"module cycle: {', '.join(component)}\n  " + "\n  ".join(uses), file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
