#!/usr/bin/env python3
"""Summarises dhat heap profiles (`make heap-profile`): the bytes live when each was written
(the operator's SIGTERM, caches full), grouped by the innermost function of ours on the
allocating stack, so a reader sees which cache or index holds them.

    hack/heap-summary.py CHILDREN PROFILE.json [PROFILE.json ...] > summary.json
"""
import json
import re
import sys
from collections import defaultdict

# Frames that say who holds an allocation, innermost first: a cache, the status writer, a
# watch, kube-runtime's reflector store (the bundles). Derived Clone/Deserialize code in the
# api crate only says which type, so it is skipped.
HOLDERS = [
    (re.compile(r"\(src/reflector/store\.rs"), "kube-runtime reflector store (bundles)"),
    (re.compile(r"\((?:controller/)?src/(cache|status|watch|reconcile|applied)/[a-z_]+\.rs"), None),
    (re.compile(r"\((?:controller/)?src/[a-z_]+\.rs"), None),
]
FRAME = re.compile(r"^0x[0-9a-f]+: (.*?) \(((?:[^()]|\([^()]*\))*)\)$")


def group(frames, ftbl):
    """The innermost frame that names a holder, as "file: function"."""
    parsed = []
    for i in frames:
        m = FRAME.match(ftbl[i])
        parsed.append((m.group(1), m.group(2)) if m else (ftbl[i], ""))
    for pattern, name in HOLDERS:
        for fn, loc in parsed:
            if pattern.search(f"({loc}"):
                if name:
                    return name
                file = loc.split(":")[0]
                return f"{file}: {re.sub(r'<.*', '', fn)}"
    return parsed[0][0] if parsed else "?"


def summarise(path, children):
    with open(path) as f:
        d = json.load(f)
    groups = defaultdict(lambda: [0, 0])
    total = 0
    for pp in d["pps"]:
        eb = pp.get("eb", 0)
        if not eb:
            continue
        g = groups[group(pp["fs"], d["ftbl"])]
        g[0] += eb
        g[1] += pp.get("ebk", 0)
        total += eb
    rows = sorted(groups.items(), key=lambda kv: -kv[1][0])
    return {
        "profile": path,
        "children": children,
        "live_bytes": total,
        "live_bytes_per_child": total / children if children else None,
        "by_function": [
            {"function": k, "bytes": b, "blocks": n,
             "bytes_per_child": round(b / children, 1) if children else None}
            for k, (b, n) in rows[:30]
        ],
    }


def main():
    children = int(sys.argv[1])
    out = [summarise(p, children) for p in sys.argv[2:]]
    json.dump({"profiles": out}, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
