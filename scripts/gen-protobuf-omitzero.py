#!/usr/bin/env python3
"""Regenerates src/server/protobuf/omit_zero.json: the protobuf fields whose
zero value (false, 0) the JSON form leaves out.

Go's protobuf encoder writes every non-pointer field, so a decoded body holds
`stdin: false` or `generation: 0` where upstream's JSON (Go's encoding/json
with `omitempty`) has nothing; pointer fields (`replicas *int32`,
`runAsUser *int64`) are written only when set, and their zero is meaningful.
This reads upstream's Go API types and lists, per message, the tags of
varint fields that are non-pointer and `omitempty`.

Run: scripts/gen-protobuf-omitzero.py API_DIR APIMACHINERY_DIR
(checkouts of github.com/kubernetes/api and github.com/kubernetes/apimachinery).
"""
import glob, json, os, re, sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRUCT = re.compile(r"^type (\w+) struct \{\n(.*?)^\}", re.S | re.M)
FIELD = re.compile(r'^\s+\w+\s+(\S+)\s+`json:"([^"]*)"[^`]*protobuf:"varint,(\d+),', re.M)


def package_of(root, path, apimachinery):
    rel = os.path.relpath(os.path.dirname(path), root).replace(os.sep, ".")
    if apimachinery:
        return "apimachinery." + rel
    return "api." + rel


def collect(root, apimachinery):
    found = {}
    pattern = "pkg/apis/meta/v1/types.go" if apimachinery else "*/*/types.go"
    for path in glob.glob(os.path.join(root, pattern)):
        package = package_of(root, path, apimachinery)
        for struct in STRUCT.finditer(open(path).read()):
            tags = []
            for go_type, json_tag, tag in FIELD.findall(struct.group(2)):
                if not go_type.startswith("*") and "omitempty" in json_tag.split(",")[1:]:
                    tags.append(int(tag))
            if tags:
                found[f"{package}.{struct.group(1)}"] = sorted(tags)
    return found


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    found = collect(sys.argv[1], False)
    found.update(collect(sys.argv[2], True))
    out = os.path.join(REPO, "src/server/protobuf/omit_zero.json")
    with open(out, "w") as f:
        json.dump(found, f, separators=(",", ":"), sort_keys=True)
    print(f"wrote {out}: {len(found)} messages")


if __name__ == "__main__":
    main()
