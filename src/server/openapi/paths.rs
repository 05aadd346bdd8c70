//! The operations of each resource as upstream publishes them (collection,
//! item and subresource paths; `x-kubernetes-action`,
//! `x-kubernetes-group-version-kind`, query parameters, patch bodies),
//! in one neutral model rendered as OpenAPI 3.0 or Swagger 2.0.

use super::schemas::{Flavor, SchemaSet, gvk};
use crate::server::catalog::ResourceInfo;
use serde_json::{Map, Value, json};

/// One parameter of an operation or a path.
#[derive(Clone, Copy, Debug)]
pub struct Param {
    pub name: &'static str,
    pub path: bool,
    pub ty: &'static str,
    pub description: &'static str,
}

const fn query(name: &'static str, ty: &'static str, description: &'static str) -> Param {
    Param { name, path: false, ty, description }
}

const NAME: Param = Param { name: "name", path: true, ty: "string", description: "name of the object" };
const NAMESPACE: Param = Param {
    name: "namespace",
    path: true,
    ty: "string",
    description: "object name and auth scope, such as for teams and projects",
};
const PRETTY: Param = query("pretty", "string", "If 'true', then the output is pretty printed.");
const DRY_RUN: Param = query(
    "dryRun",
    "string",
    "When present, indicates that modifications should not be persisted. Valid values are: - All: all dry run stages will be processed",
);
const FIELD_MANAGER: Param = query(
    "fieldManager",
    "string",
    "fieldManager is a name associated with the actor or entity that is making these changes.",
);
const FIELD_VALIDATION: Param = query(
    "fieldValidation",
    "string",
    "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore - Warn - Strict",
);
const FORCE: Param = query(
    "force",
    "boolean",
    "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people.",
);
const LIST_PARAMS: &[Param] = &[
    query("allowWatchBookmarks", "boolean", "allowWatchBookmarks requests watch events with type \"BOOKMARK\"."),
    query("continue", "string", "The continue option should be set when retrieving more results from the server."),
    query("fieldSelector", "string", "A selector to restrict the list of returned objects by their fields."),
    query("labelSelector", "string", "A selector to restrict the list of returned objects by their labels."),
    query("limit", "integer", "limit is a maximum number of responses to return for a list call."),
    query(
        "resourceVersion",
        "string",
        "resourceVersion sets a constraint on what resource versions a request may be served from.",
    ),
    query(
        "resourceVersionMatch",
        "string",
        "resourceVersionMatch determines how resourceVersion is applied to list calls.",
    ),
    query("sendInitialEvents", "boolean", "`sendInitialEvents=true` may be set together with `watch=true`."),
    query("timeoutSeconds", "integer", "Timeout for the list/watch call."),
    query(
        "watch",
        "boolean",
        "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications.",
    ),
];
const DELETE_PARAMS: &[Param] = &[
    DRY_RUN,
    query("gracePeriodSeconds", "integer", "The duration in seconds before the object should be deleted."),
    query("orphanDependents", "boolean", "Deprecated: please use the PropagationPolicy."),
    query(
        "propagationPolicy",
        "string",
        "Whether and how garbage collection will be performed: Orphan, Background or Foreground.",
    ),
];
const WRITE_PARAMS: &[Param] = &[DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION];
const PATCH_PARAMS: &[Param] = &[DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION, FORCE];

/// The content types of upstream's PATCH; strategic merge only for built-in kinds.
const PATCH_TYPES: &[&str] =
    &["application/apply-patch+yaml", "application/json-patch+json", "application/merge-patch+json"];
const STRATEGIC: &str = "application/strategic-merge-patch+json";
/// What the server answers in.
const PRODUCES: &[&str] = &["application/json", "application/yaml"];

/// What an operation takes as its body.
#[derive(Clone, Debug)]
pub enum Body {
    None,
    /// An object of the named schema (create, replace, delete options).
    Schema(String),
    /// A patch in one of the given content types.
    Patch {
        types: Vec<&'static str>,
        schema: String,
    },
}

#[derive(Clone, Debug)]
pub struct Operation {
    /// `get`, `post`, `put`, `patch`, `delete`.
    pub method: &'static str,
    /// `x-kubernetes-action`: get, list, post, put, patch, delete, deletecollection.
    pub action: &'static str,
    pub id: String,
    pub description: String,
    pub gvk: Value,
    pub params: Vec<Param>,
    pub body: Body,
    /// The schema of a successful response.
    pub response: String,
    /// The success codes besides 200 (201 created, 202 accepted).
    pub also: &'static [&'static str],
}

/// One URL path with its operations.
#[derive(Clone, Debug)]
pub struct PathItem {
    pub path: String,
    /// The operations' tag: `core_v1`, `apps_v1`, `rbacAuthorization_v1`.
    pub tag: String,
    pub params: Vec<Param>,
    pub operations: Vec<Operation>,
}

/// `CoreV1`, `AppsV1`, `RbacAuthorizationV1`: the group-version part of an operationId.
fn id_prefix(group: &str, version: &str) -> String {
    let group = if group.is_empty() { "core" } else { group.strip_suffix(".k8s.io").unwrap_or(group) };
    let mut out = String::new();
    for part in group.split(['.', '-']).chain([version]) {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}

/// `core_v1`, `apps_v1`, `rbacAuthorization_v1`: upstream's operation tags.
fn tag(group: &str, version: &str) -> String {
    let mut camel = id_prefix(group, "");
    if let Some(first) = camel.get(..1).map(str::to_lowercase) {
        camel.replace_range(..1, &first);
    }
    format!("{camel}_{version}")
}

/// `/api/v1` or `/apis/<group>/<version>`.
pub fn root_path(group: &str, version: &str) -> String {
    if group.is_empty() { format!("/api/{version}") } else { format!("/apis/{group}/{version}") }
}

/// Every path of one resource; adds the schemas they refer to.
pub fn resource_paths(res: &ResourceInfo, schemas: &mut SchemaSet) -> Vec<PathItem> {
    // Resource metrics are computed, read-only views (metrics-server publishes no paths for them either).
    if res.group == crate::server::resource_metrics::GROUP {
        return Vec::new();
    }
    let (status, delete_options, patch) = schemas.add_common();
    let kind_schema = schemas.add_kind(&res.group, &res.version, &res.kind);
    let strategic = super::kinds::lookup(&res.group, &res.version, &res.kind).is_some();
    let kind = &res.kind;
    let gv = id_prefix(&res.group, &res.version);
    let scoped = if res.namespaced { "Namespaced" } else { "" };
    let me = gvk(&res.group, &res.version, kind);
    let root = root_path(&res.group, &res.version);
    let collection = if res.namespaced {
        format!("{root}/namespaces/{{namespace}}/{}", res.plural)
    } else {
        format!("{root}/{}", res.plural)
    };
    let scope_params = if res.namespaced { vec![NAMESPACE, PRETTY] } else { vec![PRETTY] };
    let op =
        |method, action, id: String, description: String, params: &[Param], body, response: &str, also| Operation {
            method,
            action,
            id,
            description,
            gvk: me.clone(),
            params: params.to_vec(),
            body,
            response: response.to_string(),
            also,
        };

    let create = op(
        "post",
        "post",
        format!("create{gv}{scoped}{kind}"),
        format!("create a {kind}"),
        WRITE_PARAMS,
        Body::Schema(kind_schema.clone()),
        &kind_schema,
        &["201", "202"],
    );
    if !res.stored {
        return vec![PathItem {
            path: collection,
            tag: tag(&res.group, &res.version),
            params: scope_params,
            operations: vec![create],
        }];
    }

    let list = schemas.add_list(&res.group, &res.version, kind, &kind_schema);
    let mut items = Vec::new();
    let mut collection_ops = vec![
        op(
            "get",
            "list",
            format!("list{gv}{scoped}{kind}"),
            format!("list or watch objects of kind {kind}"),
            LIST_PARAMS,
            Body::None,
            &list,
            &[],
        ),
        create,
    ];
    let mut deletecollection_params = DELETE_PARAMS.to_vec();
    deletecollection_params.extend_from_slice(LIST_PARAMS);
    deletecollection_params.retain(|p| p.name != "watch" && p.name != "allowWatchBookmarks");
    collection_ops.push(op(
        "delete",
        "deletecollection",
        format!("delete{gv}Collection{scoped}{kind}"),
        format!("delete collection of {kind}"),
        &deletecollection_params,
        Body::Schema(delete_options.clone()),
        &status,
        &[],
    ));
    items.push(PathItem {
        path: collection.clone(),
        tag: tag(&res.group, &res.version),
        params: scope_params.clone(),
        operations: collection_ops,
    });

    if res.namespaced {
        let all = op(
            "get",
            "list",
            format!("list{gv}{kind}ForAllNamespaces"),
            format!("list or watch objects of kind {kind}"),
            LIST_PARAMS,
            Body::None,
            &list,
            &[],
        );
        items.push(PathItem {
            path: format!("{root}/{}", res.plural),
            tag: tag(&res.group, &res.version),
            params: vec![PRETTY],
            operations: vec![all],
        });
    }

    let mut item_params = vec![NAME];
    item_params.extend(scope_params);
    let patch_types = || {
        let mut types = PATCH_TYPES.to_vec();
        if strategic {
            types.push(STRATEGIC);
        }
        types
    };
    let item_ops = |suffix: &str, what: &str, schema: &str, op_gvk: Value, with_delete: bool| {
        let mut ops = vec![
            Operation {
                gvk: op_gvk.clone(),
                ..op(
                    "get",
                    "get",
                    format!("read{gv}{scoped}{kind}{suffix}"),
                    format!("read {what}the specified {kind}"),
                    &[],
                    Body::None,
                    schema,
                    &[],
                )
            },
            Operation {
                gvk: op_gvk.clone(),
                ..op(
                    "put",
                    "put",
                    format!("replace{gv}{scoped}{kind}{suffix}"),
                    format!("replace {what}the specified {kind}"),
                    WRITE_PARAMS,
                    Body::Schema(schema.to_string()),
                    schema,
                    &["201"],
                )
            },
            Operation {
                gvk: op_gvk.clone(),
                ..op(
                    "patch",
                    "patch",
                    format!("patch{gv}{scoped}{kind}{suffix}"),
                    format!("partially update {what}the specified {kind}"),
                    PATCH_PARAMS,
                    Body::Patch { types: patch_types(), schema: patch.clone() },
                    schema,
                    &["201"],
                )
            },
        ];
        if with_delete {
            ops.push(op(
                "delete",
                "delete",
                format!("delete{gv}{scoped}{kind}"),
                format!("delete a {kind}"),
                DELETE_PARAMS,
                Body::Schema(delete_options.clone()),
                &status,
                &["202"],
            ));
        }
        ops
    };
    let item = format!("{collection}/{{name}}");
    items.push(PathItem {
        path: item.clone(),
        tag: tag(&res.group, &res.version),
        params: item_params.clone(),
        operations: item_ops("", "", &kind_schema, me.clone(), true),
    });
    if res.subresources.iter().any(|s| s == "status") {
        items.push(PathItem {
            path: format!("{item}/status"),
            tag: tag(&res.group, &res.version),
            params: item_params.clone(),
            operations: item_ops("Status", "status of ", &kind_schema, me.clone(), false),
        });
    }
    if res.subresources.iter().any(|s| s == "scale") {
        let scale = schemas.add_kind("autoscaling", "v1", "Scale");
        items.push(PathItem {
            path: format!("{item}/scale"),
            tag: tag(&res.group, &res.version),
            params: item_params,
            operations: item_ops("Scale", "scale of ", &scale, gvk("autoscaling", "v1", "Scale"), false),
        });
    }
    items
}

fn param_v3(param: &Param) -> Value {
    let mut value = json!({
        "name": param.name,
        "in": if param.path { "path" } else { "query" },
        "description": param.description,
        "schema": {"type": param.ty, "uniqueItems": true},
    });
    if param.path {
        value["required"] = true.into();
    }
    value
}

fn param_v2(param: &Param) -> Value {
    let mut value = json!({
        "name": param.name,
        "in": if param.path { "path" } else { "query" },
        "description": param.description,
        "type": param.ty,
        "uniqueItems": true,
    });
    if param.path {
        value["required"] = true.into();
    }
    value
}

fn responses(op: &Operation, schemas: &SchemaSet, flavor: Flavor) -> Value {
    let body = |description: &str| match flavor {
        Flavor::V3 => {
            let content: Map<String, Value> =
                PRODUCES.iter().map(|t| (t.to_string(), json!({"schema": schemas.reference(&op.response)}))).collect();
            json!({"description": description, "content": content})
        }
        Flavor::V2 => json!({"description": description, "schema": schemas.reference(&op.response)}),
    };
    let mut out = Map::new();
    out.insert("200".into(), body("OK"));
    for code in op.also {
        out.insert(code.to_string(), body(if *code == "201" { "Created" } else { "Accepted" }));
    }
    out.insert("401".into(), json!({"description": "Unauthorized"}));
    Value::Object(out)
}

fn operation(op: &Operation, tag: &str, schemas: &SchemaSet, flavor: Flavor) -> Value {
    let render = match flavor {
        Flavor::V3 => param_v3,
        Flavor::V2 => param_v2,
    };
    let mut params: Vec<Value> = op.params.iter().map(render).collect();
    let mut value = json!({
        "tags": [tag],
        "description": op.description,
        "operationId": op.id,
    });
    match (&op.body, flavor) {
        (Body::None, _) => {}
        (Body::Schema(schema), Flavor::V3) => {
            value["requestBody"] =
                json!({"content": {"*/*": {"schema": schemas.reference(schema)}}, "required": op.method != "delete"});
        }
        (Body::Patch { types, schema }, Flavor::V3) => {
            let content: Map<String, Value> =
                types.iter().map(|t| (t.to_string(), json!({"schema": schemas.reference(schema)}))).collect();
            value["requestBody"] = json!({"content": content, "required": true});
        }
        (Body::Schema(schema), Flavor::V2) => {
            params.push(json!({"name": "body", "in": "body", "required": op.method != "delete", "schema": schemas.reference(schema)}));
            value["consumes"] = json!(["*/*"]);
        }
        (Body::Patch { types, schema }, Flavor::V2) => {
            params.push(json!({"name": "body", "in": "body", "required": true, "schema": schemas.reference(schema)}));
            value["consumes"] = json!(types);
        }
    }
    if flavor == Flavor::V2 {
        value["produces"] = json!(PRODUCES);
        value["schemes"] = json!(["https"]);
    }
    value["parameters"] = Value::Array(params);
    value["responses"] = responses(op, schemas, flavor);
    value["x-kubernetes-action"] = op.action.into();
    value["x-kubernetes-group-version-kind"] = op.gvk.clone();
    value
}

/// The `paths` object of a document.
pub fn render(items: &[PathItem], schemas: &SchemaSet, flavor: Flavor) -> Map<String, Value> {
    let render_param = match flavor {
        Flavor::V3 => param_v3,
        Flavor::V2 => param_v2,
    };
    let mut paths = Map::new();
    for item in items {
        let mut value = Map::new();
        for op in &item.operations {
            value.insert(op.method.to_string(), operation(op, &item.tag, schemas, flavor));
        }
        value.insert("parameters".into(), Value::Array(item.params.iter().map(render_param).collect()));
        paths.insert(item.path.clone(), Value::Object(value));
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_follow_upstream() {
        assert_eq!(id_prefix("", "v1"), "CoreV1");
        assert_eq!(id_prefix("apps", "v1"), "AppsV1");
        assert_eq!(id_prefix("rbac.authorization.k8s.io", "v1"), "RbacAuthorizationV1");
        assert_eq!(id_prefix("stable.example.com", "v1beta1"), "StableExampleComV1beta1");
        assert_eq!(tag("", "v1"), "core_v1");
        assert_eq!(tag("rbac.authorization.k8s.io", "v1"), "rbacAuthorization_v1");
    }

    #[test]
    fn namespaced_resources_have_upstream_paths() {
        let catalog = crate::server::catalog::Catalog::builtin();
        let pods = catalog.lookup("", "v1", "pods").expect("pods");
        let mut schemas = SchemaSet::new(Flavor::V3);
        let items = resource_paths(&pods, &mut schemas);
        let paths: Vec<&str> = items.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/api/v1/namespaces/{namespace}/pods",
                "/api/v1/pods",
                "/api/v1/namespaces/{namespace}/pods/{name}",
                "/api/v1/namespaces/{namespace}/pods/{name}/status",
            ]
        );
        let ids: Vec<&str> = items[2].operations.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "readCoreV1NamespacedPod",
                "replaceCoreV1NamespacedPod",
                "patchCoreV1NamespacedPod",
                "deleteCoreV1NamespacedPod"
            ]
        );
    }

    #[test]
    fn reviews_only_create() {
        let catalog = crate::server::catalog::Catalog::builtin();
        let review = catalog.lookup("authorization.k8s.io", "v1", "localsubjectaccessreviews").expect("review");
        let mut schemas = SchemaSet::new(Flavor::V3);
        let items = resource_paths(&review, &mut schemas);
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].path, "/apis/authorization.k8s.io/v1/namespaces/{namespace}/localsubjectaccessreviews");
        assert_eq!(items[0].operations[0].id, "createAuthorizationV1NamespacedLocalSubjectAccessReview");
    }
}
