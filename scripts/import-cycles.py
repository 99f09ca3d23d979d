#!/usr/bin/env python3
"""Lists import circles between the modules of each crate of the workspace.

A module is a file under a crate's src/ (mod.rs and lib.rs/main.rs stand for their folder).
An edge A -> B is any `crate::B...` path (in a `use` or inline) in A's file, resolved to the
longest module prefix that exists; a module's own submodules and its ancestors are not edges
(a parent declares its children; `super::` is the usual way up). Exit 1 if any circle exists.
"""
import os, re, sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def crates():
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in ('target', '.git', 'node_modules')]
        if 'Cargo.toml' in filenames and os.path.isdir(os.path.join(dirpath, 'src')):
            yield os.path.join(dirpath, 'src')

def modules(src):
    mods = {}
    for dirpath, _, filenames in os.walk(src):
        for f in filenames:
            if not f.endswith('.rs'):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, src)[:-3].split(os.sep)
            if rel[-1] in ('mod', 'lib', 'main'):
                rel = rel[:-1]
            if rel and rel[-1] == 'tests':
                continue  # unit tests may use anything
            mods[tuple(rel)] = path
    return mods

def strip_tests(text):
    # Drop `#[cfg(test)] mod tests { ... }` blocks: test code may import freely.
    i = text.find('#[cfg(test)]')
    return text if i < 0 else text[:i]

def edges(mods):
    out = {m: set() for m in mods}
    for m, path in mods.items():
        text = strip_tests(open(path).read())
        # Comments and doc links name modules without depending on them.
        text = re.sub(r'//[^\n]*', '', text)
        # expand `use crate::{a::b, c}` groups one level
        paths = re.findall(r'crate::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)', text)
        for group in re.findall(r'crate::\{([^}]*)\}', text):
            paths += [p.strip().split(' ')[0] for p in group.split(',') if p.strip()]
        for p in paths:
            parts = tuple(x for x in p.split('::') if x and x != 'self')
            target = None
            for n in range(len(parts), 0, -1):
                if parts[:n] in mods:
                    target = parts[:n]
                    break
            if target is None or target == m:
                continue
            if target[:len(m)] == m or m[:len(target)] == target:
                continue  # own child or own ancestor
            out[m].add(target)
    return out

def cycles(graph):
    index, low, stack, on, found = {}, {}, [], set(), []
    counter = [0]
    def strong(v):
        index[v] = low[v] = counter[0]; counter[0] += 1
        stack.append(v); on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(comp)
    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            strong(v)
    return found

bad = False
for src in sorted(crates()):
    mods = modules(src)
    for comp in cycles(edges(mods)):
        bad = True
        names = sorted('::'.join(c) or 'crate' for c in comp)
        print(f"{os.path.relpath(src, root)}: " + ' <-> '.join(names))
sys.exit(1 if bad else 0)
