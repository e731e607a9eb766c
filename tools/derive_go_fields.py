#!/usr/bin/env python3
"""Derives sim/src/machineconfig/go_fields.txt from the Go struct definitions of the Talos
machine-config document types (pkg/machinery/config/types/**), read from a git mirror.

Usage:
  tools/derive_go_fields.py /work/.mirror/siderolabs+talos/repo v1.14.0-rc.1 \
      > sim/src/machineconfig/go_fields.txt

The JSON schemas (known_fields.txt) say which keys exist; they do not say what the Go
encoder and the Talos merge need to know: whether a field is `omitempty`, whether it is a
pointer, whether it carries `merge:"replace"`, and its Go kind. Each output line is
`<kind> <path> <flags>` with paths spelled as in known_fields.txt (`.` between keys, `[]` for
list items, `{}` for map values) and flags a comma-separated subset of
`omitempty,ptr,replace` plus exactly one Go kind:
  str int bool float   scalars
  slice map struct     containers (a struct's fields follow as their own lines)
  any                  meta.Unstructured (free-form, `{}` when empty)
  text:<zero>          a custom-marshalled scalar; <zero> is how its zero value encodes
                       (`""`), or `?` when unknown
The document root of each kind is listed with path `.`.
"""
import re
import subprocess
import sys

repo, tag = sys.argv[1], sys.argv[2]
ROOT = "pkg/machinery/config/types/"


def git(*args):
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True,
                          text=True).stdout


files = [f for f in git("ls-tree", "-r", "--name-only", tag, ROOT).split("\n")
         if f.endswith(".go") and not f.endswith("_test.go")]

# package dir -> {type name -> ("struct", [fields]) | ("def", text)}
types = {}
marshalers = set()  # (pkgdir, type) with MarshalYAML/MarshalText
registrations = []  # (pkgdir, kind expr, struct name)
consts = {}  # (pkgdir, name) -> value
imports = {}  # (pkgdir, alias) -> pkgdir

FIELD = re.compile(r'^\s+(\w+)\s+([^\s`]+)\s+`([^`]*)`')
EMBED = re.compile(r'^\s+(\*?[\w.]+)\s+`([^`]*)`')
TAG = re.compile(r'(\w+):"([^"]*)"')

for path in files:
    pkg = path.rsplit("/", 1)[0]
    text = git("show", f"{tag}:{path}")
    lines = text.split("\n")
    table = types.setdefault(pkg, {})
    for m in re.finditer(r'^\s*(?:const\s+)?(\w+)\s+=\s+"([^"]*)"', text, re.M):
        consts[(pkg, m.group(1))] = m.group(2)
    for m in re.finditer(r'^\s*(?:(\w+)\s+)?"github.com/siderolabs/talos/(pkg/machinery/config/types/[\w/]+)"',
                         text, re.M):
        imports[(pkg, m.group(1) or m.group(2).rsplit("/", 1)[1])] = m.group(2)
    for m in re.finditer(r'^func \(\w+ \*?(\w+)\) (MarshalYAML|MarshalText)\(', text, re.M):
        marshalers.add((pkg, m.group(1)))
    for m in re.finditer(r'registry\.Register\(\s*([\w".]+),\s*func\(version string\) config\.Document \{.*?return &(\w+)\{\}',
                         text, re.S):
        registrations.append((pkg, m.group(1), m.group(2)))
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r'^type (\w+) struct \{\s*$', line)
        if m:
            fields = []
            i += 1
            while lines[i] != "}":
                fm = FIELD.match(lines[i])
                em = EMBED.match(lines[i])
                if fm:
                    fields.append((fm.group(1), fm.group(2), dict(TAG.findall(fm.group(3)))))
                elif em:
                    fields.append((None, em.group(1), dict(TAG.findall(em.group(2)))))
                i += 1
            table[m.group(1)] = ("struct", fields)
        else:
            m = re.match(r'^type (\w+) =?\s*(.+?)\s*$', line)
            if m and not m.group(2).startswith(("interface", "struct", "func")):
                table[m.group(1)] = ("def", m.group(2))
        i += 1

SCALARS = {"string": "str", "bool": "bool", "float32": "float", "float64": "float"}
for t in ["int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64"]:
    SCALARS[t] = "int"
# External types that marshal as a string whose zero value is "".
EMPTY_TEXT = {"netip.Prefix", "netip.Addr", "netip.AddrPort", "url.URL"}
EMPTY_TEXT_LOCAL = {("meta", "URL"), ("meta", "Prefix"), ("meta", "Addr"), ("meta", "AddrPort")}


def resolve(pkg, name):
    """(pkgdir, local name) for a possibly qualified type name, or None if external."""
    if "." in name:
        alias, local = name.split(".", 1)
        target = imports.get((pkg, alias))
        if target is None:
            return None
        return target, local
    return pkg, name


def classify(pkg, typ):
    """Returns (ptr, kind, elem) where elem is (pkg, type text) for containers/structs."""
    ptr = typ.startswith("*")
    typ = typ.lstrip("*")
    if typ == "[]byte":
        return ptr, 'text:""', None
    if typ.startswith("[]"):
        return ptr, "slice", (pkg, typ[2:])
    if typ.startswith("map["):
        depth, j = 0, 3
        while True:
            if typ[j] == "[":
                depth += 1
            elif typ[j] == "]":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        return ptr, "map", (pkg, typ[j + 1:])
    if typ in SCALARS:
        return ptr, SCALARS[typ], None
    if typ in ("any", "interface{}"):
        return ptr, "any", None
    if typ in EMPTY_TEXT:
        return ptr, 'text:""', None
    if typ == "time.Duration":
        return ptr, 'text:"0s"', None
    target = resolve(pkg, typ)
    if target is None:
        return ptr, "text:?", None
    tpkg, local = target
    short = tpkg.rsplit("/", 1)[1]
    if (short, local) in EMPTY_TEXT_LOCAL:
        return ptr, 'text:""', None
    if local == "Unstructured" and short == "meta":
        return ptr, "any", None
    if (tpkg, local) in marshalers:
        return ptr, "text:?", None
    entry = types.get(tpkg, {}).get(local)
    if entry is None:
        return ptr, "text:?", None
    if entry[0] == "struct":
        return ptr, "struct", (tpkg, local)
    inner_ptr, kind, elem = classify(tpkg, entry[1])
    return ptr or inner_ptr, kind, elem


out = []


def join(path, key):
    return key if path == "" else f"{path}.{key}"


def emit_struct(kind, pkg, name, path, seen):
    if (pkg, name) in seen:
        return
    seen = seen | {(pkg, name)}
    for field_name, typ, tags in types[pkg][name][1]:
        yaml_tag = tags.get("yaml")
        if yaml_tag is None or yaml_tag == "-":
            continue
        parts = yaml_tag.split(",")
        if "inline" in parts[1:]:
            ptr, k, elem = classify(pkg, typ)
            if k == "struct":
                emit_struct(kind, elem[0], elem[1], path, seen)
            continue
        if field_name is None or not field_name[0].isupper():
            continue
        flags = []
        if "omitempty" in parts[1:]:
            flags.append("omitempty")
        if "replace" in tags.get("merge", "").split(","):
            flags.append("replace")
        emit_value(kind, pkg, typ, join(path, parts[0]), flags, seen)


def emit_value(kind, pkg, typ, path, flags, seen):
    ptr, k, elem = classify(pkg, typ)
    if ptr:
        flags = flags + ["ptr"]
    out.append(f"{kind} {path} {','.join(flags + [k])}")
    if k == "struct":
        emit_struct(kind, elem[0], elem[1], path, seen)
    elif k in ("slice", "map"):
        emit_value(kind, elem[0], elem[1], path + ("[]" if k == "slice" else "{}"), [], seen)


for pkg, kind_expr, struct in sorted(registrations, key=lambda r: (r[0], r[2])):
    if kind_expr.startswith('"'):
        kind = kind_expr.strip('"')
    else:
        kind = consts.get((pkg, kind_expr))
    if kind is None or struct not in types.get(pkg, {}):
        continue
    out.append(f"{kind} . struct")
    emit_struct(kind, pkg, struct, "", set())

print("\n".join(out))
