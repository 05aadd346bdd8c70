#!/usr/bin/env python3
"""Regenerates src/server/protobuf/schema.json: for every Kubernetes protobuf
message, its fields as [tag, jsonName, type, message-or-null, repeated].

Inputs (both published, Apache-2.0, generated from upstream's API definitions):
  - the k8s-pb crate (prost structs from upstream's generated.proto files):
    field tags and protobuf types;
  - the k8s-openapi crate (from upstream's OpenAPI spec): the JSON field names.
Run: scripts/gen-protobuf-schema.py  (downloads k8s-pb into .cache if needed).
"""
import glob, json, os, re, sys, tarfile, urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("KUBE_TEST_CACHE", os.path.join(REPO, ".cache"))
PB_VERSION = "0.9.0"
OPENAPI_VERSION_DIR = "v1_34"


def k8s_pb_src():
    root = os.path.join(CACHE, f"k8s-pb-{PB_VERSION}")
    if not os.path.isdir(root):
        os.makedirs(CACHE, exist_ok=True)
        crate = os.path.join(CACHE, f"k8s-pb-{PB_VERSION}.crate")
        url = f"https://static.crates.io/crates/k8s-pb/k8s-pb-{PB_VERSION}.crate"
        urllib.request.urlretrieve(url, crate)
        with tarfile.open(crate) as tar:
            tar.extractall(CACHE)
    return os.path.join(root, "src")


def json_names():
    """Per-struct and global rust-field -> JSON-name maps from k8s-openapi."""
    roots = glob.glob(os.path.expanduser(f"~/.cargo/registry/src/*/k8s-openapi-0.29.0/src/{OPENAPI_VERSION_DIR}"))
    if not roots:
        sys.exit("k8s-openapi 0.29.0 sources not found in ~/.cargo/registry (run cargo build first)")
    per_struct, global_map = {}, {}
    for path in glob.glob(os.path.join(roots[0], "**/*.rs"), recursive=True):
        text = open(path).read()
        struct = re.search(r"pub struct (\w+) \{", text)
        pairs = re.findall(r'"([A-Za-z0-9$_-]+)" => Field::Key_(\w+),', text)
        if struct:
            per_struct.setdefault(struct.group(1), {}).update({rust: js for js, rust in pairs})
        for js, rust in pairs:
            global_map.setdefault(rust, js)
    return per_struct, global_map


def camel(name):
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


FIELD = re.compile(
    r"#\[prost\((?P<attr>[^\]]*?)tag = \"(?P<tag>\d+)\"[^\]]*\)\]\s*pub (?:r#)?(?P<name>\w+): (?P<ty>[^\n]+),\n"
)


def resolve(module, rust_type):
    """Turns a Rust type path into a dotted message name relative to `module`."""
    inner = rust_type
    for wrapper in ("::core::option::Option<", "::prost::alloc::vec::Vec<", "::prost::alloc::boxed::Box<"):
        inner = inner.replace(wrapper, "")
    inner = inner.replace(">", "").strip().rstrip(",")
    if "BTreeMap" in rust_type:
        inner = [p for p in inner.split(",") if p.strip()][-1].strip()
    parts = module.split(".")
    segments = inner.split("::")
    while segments and segments[0] == "super":
        parts = parts[:-1]
        segments = segments[1:]
    return ".".join(parts + segments)


def main():
    src = k8s_pb_src()
    per_struct, global_map = json_names()
    messages = {}
    for path in glob.glob(os.path.join(src, "**/mod.rs"), recursive=True):
        module = os.path.relpath(os.path.dirname(path), src).replace(os.sep, ".")
        # rustfmt wraps long field types over several lines: join them back.
        text = re.sub(r"<\s*\n\s*", "<", open(path).read())
        text = re.sub(r"(pub (?:r#)?\w+):\s*\n\s*", r"\1: ", text)
        text = re.sub(r",\s*\n\s*(?=(?:::|super|>))", ", ", text)
        text = re.sub(r"\s*\n\s*>", ">", text)
        for match in re.finditer(r"pub struct (\w+) \{(.*?)\n\}", text, re.S):
            name, body = match.group(1), match.group(2) + "\n"
            fields = []
            names = per_struct.get(name, {})
            for field in FIELD.finditer(body):
                attr, rust = field.group("attr"), field.group("name")
                js = names.get(rust) or global_map.get(rust) or camel(rust)
                if rust == "type":
                    js = "type"
                kind = attr.split(",")[0].strip()
                repeated = "repeated" in attr
                ref = None
                if kind.startswith("btree_map"):
                    value_kind = attr.split('"')[1].split(",")[1].strip()
                    kind = "map:" + value_kind
                    if value_kind == "message":
                        ref = resolve(module, field.group("ty"))
                elif kind == "message":
                    ref = resolve(module, field.group("ty"))
                elif kind.startswith("bytes"):
                    kind = "bytes"
                fields.append([int(field.group("tag")), js, kind, ref, repeated])
            messages[f"{module}.{name}"] = fields
    out = os.path.join(REPO, "src/server/protobuf/schema.json")
    with open(out, "w") as f:
        json.dump(messages, f, separators=(",", ":"), sort_keys=True)
    print(f"wrote {out}: {len(messages)} messages")


if __name__ == "__main__":
    main()
