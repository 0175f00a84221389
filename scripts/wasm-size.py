#!/usr/bin/env python3
"""Code bytes of a wasm module per Rust crate, from its function bodies and name section.

Usage: scripts/wasm-size.py [MODULE.wasm] [TOP]
  MODULE defaults to the raw cargo output of scripts/build-web.sh
  ($CARGO_TARGET_DIR/wasm32-unknown-unknown/wasm-release/ichnet.wasm, which still has names;
  wasm-opt strips them). TOP: how many crates to list (default 30).

Used to find what to size-optimise under the 15 MB budget (Cargo.toml, [profile.wasm-release]):
a function is charged to the first crate named in its symbol, or, for a trait impl
(`<a::T as b::Trait>::f`), to the crate of the implementing type.
"""
import collections
import os
import re
import sys


def leb(b, i):
    r = s = 0
    while True:
        x = b[i]
        i += 1
        r |= (x & 0x7F) << s
        s += 7
        if x < 0x80:
            return r, i


def sections(data):
    i = 8
    while i < len(data):
        sid = data[i]
        size, i = leb(data, i + 1)
        yield sid, i, i + size
        i += size


def imported_functions(data, start):
    n, j = leb(data, start)
    count = 0
    for _ in range(n):
        for _ in range(2):  # module and field names
            ln, j = leb(data, j)
            j += ln
        kind = data[j]
        j += 1
        if kind == 0:  # function: type index
            _, j = leb(data, j)
            count += 1
        elif kind == 1:  # table: reftype, limits
            j += 1
            flags, j = leb(data, j)
            _, j = leb(data, j)
            if flags & 1:
                _, j = leb(data, j)
        elif kind == 2:  # memory: limits
            flags, j = leb(data, j)
            _, j = leb(data, j)
            if flags & 1:
                _, j = leb(data, j)
        elif kind == 3:  # global: valtype, mutability
            j += 2
        else:
            j += 1
    return count


def crate_of(symbol):
    impl = re.match(r"_ZN\d+_\$LT\$(?:\$RF\$|mut\$u20\$)*([a-z_][a-z0-9_]*)\.\.", symbol)
    if impl:
        return impl.group(1)
    plain = re.match(r"_ZN(\d+)([A-Za-z_][A-Za-z0-9_]*)", symbol)
    if plain:
        return plain.group(2)[: int(plain.group(1))]
    path = re.match(r"<?([a-z_][a-z0-9_]*)::", symbol)
    return path.group(1) if path else "(other)"


def main():
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    path = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] else f"{target}/wasm32-unknown-unknown/wasm-release/ichnet.wasm"
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    data = open(path, "rb").read()
    n_imports, bodies, names = 0, [], {}
    for sid, start, end in sections(data):
        if sid == 2:
            n_imports = imported_functions(data, start)
        elif sid == 10:
            n, j = leb(data, start)
            for _ in range(n):
                size, k = leb(data, j)
                bodies.append(k - j + size)
                j = k + size
        elif sid == 0:
            ln, j = leb(data, start)
            if data[j : j + ln] != b"name":
                continue
            j += ln
            while j < end:
                sub = data[j]
                size, j = leb(data, j + 1)
                if sub == 1:
                    n, k = leb(data, j)
                    for _ in range(n):
                        idx, k = leb(data, k)
                        ln, k = leb(data, k)
                        names[idx] = data[k : k + ln].decode("utf-8", "replace")
                        k += ln
                j += size
    if not names:
        sys.exit(f"{path} has no name section (wasm-opt strips it): use the raw cargo output")
    per = collections.Counter()
    for i, size in enumerate(bodies):
        per[crate_of(names.get(i + n_imports, ""))] += size
    total = sum(bodies)
    print(f"{path}: {len(bodies)} functions, {total / 1e6:.2f} MB of code")
    for crate, size in per.most_common(top):
        print(f"{size / 1e6:8.3f} MB {100 * size / total:5.1f} %  {crate}")


if __name__ == "__main__":
    main()
