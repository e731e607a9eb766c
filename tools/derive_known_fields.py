#!/usr/bin/env python3
"""Derives src/sim/machineconfig/known_fields.txt from the Talos machine-config JSON schemas.

Usage: tools/derive_known_fields.py SCHEMA.json... > src/sim/machineconfig/known_fields.txt
Each output line is `<kind> <path>`, in schema (= Go struct field) order, first schema first; `v1alpha1` is the legacy document. Paths use `.` between
keys, `[]` for list items, `{}` for keys of a typed map, and end in `*` below which anything
is accepted (free-form objects such as extraArgs or embedded Kubernetes manifests).
"""
import json
import sys

out = []
seen_lines = set()


def add(entry):
    if entry not in seen_lines:
        seen_lines.add(entry)
        out.append(entry)


def walk(defs, node, kind, path, seen):
    if not isinstance(node, dict):
        return
    if "$ref" in node:
        name = node["$ref"].split("/")[-1]
        if (name, path) in seen:
            return
        walk(defs, defs[name], kind, path, seen | {(name, path)})
        return
    for key in ("oneOf", "anyOf", "allOf"):
        for branch in node.get(key, []):
            walk(defs, branch, kind, path, seen)
    typ = node.get("type")
    props = node.get("properties")
    if props:
        for name, sub in props.items():
            child = f"{path}.{name}" if path else name
            add((kind, child))
            walk(defs, sub, kind, child, seen)
    addl = node.get("additionalProperties")
    pattern = node.get("patternProperties")
    if isinstance(addl, dict) and (addl.get("properties") or "$ref" in addl):
        add((kind, f"{path}.{{}}"))
        walk(defs, addl, kind, f"{path}.{{}}", seen)
    elif pattern:
        for sub in pattern.values():
            add((kind, f"{path}.{{}}"))
            walk(defs, sub, kind, f"{path}.{{}}", seen)
    elif (typ == "object" or typ is None) and not props and "items" not in node and path:
        if typ == "object" or addl not in (None, False):
            add((kind, f"{path}.*"))
    if typ == "array" or "items" in node:
        items = node.get("items")
        if isinstance(items, dict):
            add((kind, f"{path}[]"))
            walk(defs, items, kind, f"{path}[]", seen)


for schema_path in sys.argv[1:]:
    schema = json.load(open(schema_path))
    defs = schema["$defs"]
    for ref in schema["oneOf"]:
        name = ref["$ref"].split("/")[-1]
        doc = defs[name]
        kind_enum = doc.get("properties", {}).get("kind", {}).get("enum")
        kind = kind_enum[0] if kind_enum else "v1alpha1"
        add((kind, ""))
        walk(defs, doc, kind, "", set())

add(("v1alpha1", "persist"))
for kind, path in out:
    if path:
        print(f"{kind} {path}")
    else:
        print(f"{kind} .")
