//! The generic REST API over every stored resource: get, list, watch,
//! create, update, patch, delete and deletecollection, for the resource
//! itself and its `status` subresource, with upstream's semantics.

mod attach;
mod channel;
mod codec;
mod converted;
mod delete;
mod eviction;
pub(crate) mod exec;
mod field_validation;
pub(crate) mod node_proxy;
mod objects;
mod patch;
pub(crate) mod portforward;
mod read;
mod scale;
mod service_account_admission;
mod services;
mod tokens;
mod watch;
mod write;

pub use codec::{Negotiated, decode_body, respond};
pub use objects::now_rfc3339;

use super::authn::UserInfo;
use super::catalog::ResourceInfo;
use super::error::ApiError;
use super::request_info::{self, RequestInfo};
use super::state::ApiState;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use std::collections::HashMap;
use std::sync::Arc;

/// Query parameters of a request, by name.
pub type Params = HashMap<String, String>;

/// Everything a verb handler needs about its request.
pub struct Call {
    pub state: ApiState,
    pub info: RequestInfo,
    pub resource: Arc<ResourceInfo>,
    pub params: Params,
    pub headers: HeaderMap,
    pub user: UserInfo,
    pub negotiated: Negotiated,
    /// The service-account token signer, when the server has one.
    pub signer: Option<Arc<super::authn::serviceaccount::TokenSigner>>,
    /// Set when the client's resource is stored as another (`resource` is
    /// then the stored one): patches apply to the client's form.
    pub conversion: Option<&'static super::conversion::Conversion>,
}

impl Call {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub fn namespace(&self) -> Option<&str> {
        if self.resource.namespaced { self.info.namespace.as_deref() } else { None }
    }

    pub fn name(&self) -> &str {
        self.info.name.as_deref().unwrap_or_default()
    }

    /// `dryRun=All`: validate and answer as if written, store nothing.
    pub fn dry_run(&self) -> Result<bool, ApiError> {
        match self.params.get("dryRun").map(String::as_str) {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!("Invalid dry run value: {other:?}, supported: All"))),
        }
    }
}

/// Serves any `/api/...` or `/apis/...` resource path.
pub async fn handle(State(state): State<ApiState>, request: Request) -> Response {
    match dispatch(state, request).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn dispatch(state: ApiState, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let params: Params = Query::<Params>::try_from_uri(&parts.uri).map(|q| q.0).unwrap_or_default();
    let watch_param = matches!(params.get("watch").map(String::as_str), Some("true" | "1"));
    let Some(mut info) = request_info::parse(&parts.method, parts.uri.path(), watch_param) else {
        return Err(ApiError::not_found_path());
    };
    // Streaming subresources need `create` also for GET (WebSocket) requests, as upstream.
    if matches!(info.subresource.as_deref(), Some("exec" | "attach" | "portforward")) {
        info.verb = "create";
    }
    let user = super::authn::authenticate(&parts)?;
    let resource =
        state.catalog.lookup(&info.group, &info.version, &info.resource).ok_or_else(ApiError::not_found_path)?;
    if let Some(sub) = &info.subresource
        && !resource.subresources.contains(sub)
    {
        return Err(ApiError::not_found_path());
    }
    super::authz::authorize(&state, &user, &info, &resource).await?;
    let negotiated = Negotiated::from_headers(&parts.headers);
    if matches!(info.subresource.as_deref(), Some("exec" | "attach" | "portforward")) && resource.kind == "Pod" {
        let sub = info.subresource.clone();
        let call = Call {
            state,
            info,
            resource,
            params,
            headers: parts.headers.clone(),
            user,
            negotiated,
            signer: None,
            conversion: None,
        };
        return match sub.as_deref() {
            Some("attach") => attach::attach(call, parts).await,
            Some("portforward") => portforward::portforward(call, parts).await,
            _ => exec::exec(call, parts).await,
        };
    }
    let body = read_body(body).await?;
    let signer = parts.extensions.get::<Arc<super::authn::serviceaccount::TokenSigner>>().cloned();
    let logs = parts.extensions.get::<crate::agent::logs::Logs>().cloned();
    let conversion = super::conversion::of(&resource.group, &resource.version, &resource.plural);
    if let Some(conversion) = conversion {
        let (group, version, plural) = conversion.stored;
        let stored = state.catalog.lookup(group, version, plural).ok_or_else(ApiError::not_found_path)?;
        let mut headers = parts.headers;
        let body = converted::request_body(conversion, &mut headers, body)?;
        let watch = info.verb == "watch";
        let json = Negotiated { yaml: false, ..negotiated };
        let call = Call {
            state,
            info,
            resource: stored,
            params,
            headers,
            user,
            negotiated: json,
            signer,
            conversion: Some(conversion),
        };
        let response = match serve(call, body, &parts.method, logs).await {
            Ok(response) => response,
            Err(err) => return Err(err),
        };
        return Ok(converted::response(conversion, response, watch, negotiated).await);
    }
    let call =
        Call { state, info, resource, params, headers: parts.headers, user, negotiated, signer, conversion: None };
    serve(call, body, &parts.method, logs).await
}

/// Runs the verb of `call`.
async fn serve(
    call: Call,
    body: bytes::Bytes,
    method: &http::Method,
    logs: Option<crate::agent::logs::Logs>,
) -> Result<Response, ApiError> {
    if call.info.subresource.as_deref() == Some("scale") {
        return scale::scale(call, body, method).await;
    }
    if call.resource.kind == "TokenReview" {
        return tokens::review(call, body).await;
    }
    if call.resource.is_component_status() {
        return super::component_status::handle(call).await;
    }
    if call.resource.group == super::resource_metrics::GROUP {
        return super::resource_metrics::handle(call).await;
    }
    if !call.resource.stored {
        return super::reviews::handle(call, body).await;
    }
    match (call.info.verb, call.info.subresource.as_deref()) {
        ("get", None | Some("status")) => read::get(call).await,
        ("get", Some("log")) => {
            let pod = call.state.registry.get(&call.resource, call.namespace(), call.name()).await?;
            if let Some(agent) = node_proxy::remote_agent(&call.state, &pod).await? {
                let container = crate::agent::logs::container_for(&pod, &call.params)?;
                let query = serde_urlencoded::to_string(&call.params).unwrap_or_default();
                let namespace = call.namespace().unwrap_or("default");
                return node_proxy::logs(&call.state, agent, namespace, call.name(), &container, &query).await;
            }
            // Pods of this server's own agent have their logs here.
            let logs = logs.ok_or_else(|| ApiError::bad_request("this server runs no agent"))?;
            crate::agent::logs::respond(&logs, &pod, &call.params)
        }
        ("list", None) => read::list(call).await,
        ("watch", None) => watch::watch(call).await,
        ("create", None) => write::create(call, body).await,
        ("create", Some("binding")) => write::bind(call, body).await,
        ("create", Some("token")) => tokens::request(call, body).await,
        ("create", Some("eviction")) => eviction::evict(call, body).await,
        ("update", None | Some("status") | Some("finalize")) => write::update(call, body).await,
        ("patch", None | Some("status")) => patch::patch(call, body).await,
        ("delete", None) => delete::delete(call, body).await,
        ("deletecollection", None) => delete::delete_collection(call).await,
        (verb, sub) => Err(ApiError::method_not_allowed(format!(
            "{verb} is not supported on {}{}",
            call.resource.qualified_plural(),
            sub.map(|s| format!("/{s}")).unwrap_or_default()
        ))),
    }
}

async fn read_body(body: Body) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, codec::MAX_BODY).await.map_err(|_| ApiError::too_large())
}
