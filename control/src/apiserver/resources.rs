//! The handler of every resource path: maps method, path and query to an object-service verb.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use super::AppState;
use super::body;
use super::path::{self, PathError};
use super::table::{self, TableRequest};
use super::watch;
use crate::objects::{
    DeleteOptions, FieldValidation, ListOptions, PatchKind, Selectors, Subresource, Target, WatchOptions, WriteOptions,
    Written,
};
use crate::status::ApiError;

/// The query parameters Kubernetes defines for resource requests (others are ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Params {
    pub watch: Option<String>,
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub limit: Option<String>,
    #[serde(rename = "continue")]
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub timeout_seconds: Option<String>,
    pub allow_watch_bookmarks: Option<String>,
    pub field_validation: Option<String>,
    pub dry_run: Option<String>,
    pub grace_period_seconds: Option<String>,
    pub propagation_policy: Option<String>,
    pub include_object: Option<String>,
    pub field_manager: Option<String>,
    pub force: Option<String>,
}

fn is_true(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("true" | "1" | "True"))
}

fn parse_number<T: std::str::FromStr>(name: &str, v: &Option<String>) -> Result<Option<T>, ApiError> {
    v.as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<T>().map_err(|_| ApiError::BadRequest(format!("invalid {name}: {s:?} is not a number"))))
        .transpose()
}

impl Params {
    pub fn is_watch(&self) -> bool {
        is_true(&self.watch)
    }

    fn write_options(&self, headers: &HeaderMap) -> Result<WriteOptions, ApiError> {
        Ok(WriteOptions {
            dry_run: self.dry_run()?,
            field_validation: FieldValidation::parse(self.field_validation.as_deref())?,
            field_manager: Some(self.field_manager(headers)),
        })
    }

    /// `fieldManager`, else the product name of the client's user agent (`kubectl/v1.32…` is
    /// `kubectl`), as Kubernetes names managers of writes that do not say.
    fn field_manager(&self, headers: &HeaderMap) -> String {
        if let Some(manager) = self.field_manager.as_deref().filter(|m| !m.is_empty()) {
            return manager.to_string();
        }
        let agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("unknown");
        agent.split('/').next().unwrap_or(agent).chars().take(128).collect()
    }

    fn dry_run(&self) -> Result<bool, ApiError> {
        match self.dry_run.as_deref() {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => {
                Err(ApiError::BadRequest(format!("dryRun: Unsupported value: {other:?}: supported values: \"All\"")))
            }
        }
    }

    fn list_options(&self, target: &Target) -> Result<ListOptions, ApiError> {
        Ok(ListOptions {
            selectors: Selectors::parse(target, self.label_selector.as_deref(), self.field_selector.as_deref())?,
            limit: parse_number("limit", &self.limit)?,
            continue_token: self.continue_token.clone(),
            resource_version: self.resource_version.clone(),
            exact: self.resource_version_match.as_deref() == Some("Exact"),
        })
    }
}

/// Serves any `/api/...` or `/apis/...` resource request.
pub async fn handle(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match dispatch(&state, &method, &uri, params, &headers, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn dispatch(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    params: Params,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let path::ResourcePath { target, subresource } = path::parse(uri.path()).map_err(|e| match e {
        PathError::NotAResourcePath | PathError::UnknownResource => ApiError::NoSuchResource,
    })?;
    if subresource.as_deref() == Some("log") && target.kind.kind == "Pod" && target.kind.group.is_empty() {
        if method != Method::GET {
            return Err(ApiError::MethodNotAllowed);
        }
        return super::logs::pod_log(state, &target, uri.query()).await;
    }
    if subresource.as_deref() == Some("binding") && target.kind.kind == "Pod" && target.kind.group.is_empty() {
        if method != Method::POST {
            return Err(ApiError::MethodNotAllowed);
        }
        state.objects.bind(&target, &body::decode(headers, &body)?, &params.write_options(headers)?).await?;
        let success =
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
        return ok_json(StatusCode::CREATED, &success);
    }
    if subresource.as_deref() == Some("eviction") && target.kind.kind == "Pod" && target.kind.group.is_empty() {
        if method != Method::POST {
            return Err(ApiError::MethodNotAllowed);
        }
        state.objects.evict(&target, &body::decode(headers, &body)?, &params.write_options(headers)?).await?;
        let success =
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
        return ok_json(StatusCode::CREATED, &success);
    }
    let sub = match subresource.as_deref() {
        None => Subresource::Main,
        Some("status") if target.kind.has_status => Subresource::Status,
        Some("scale") if target.kind.has_scale => Subresource::Scale,
        Some("finalize") if target.kind.kind == "Namespace" && target.kind.group.is_empty() => Subresource::Finalize,
        Some(_) => return Err(ApiError::NoSuchResource),
    };
    let objects = &state.objects;
    let is_collection = target.name.is_none();
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let as_table = match table::negotiate(accept) {
        Some(version) => {
            Some(TableRequest { version, include: table::Include::parse(params.include_object.as_deref())? })
        }
        None => None,
    };
    match (method.as_str(), is_collection) {
        ("GET", true) if params.is_watch() => {
            let opts = WatchOptions {
                selectors: Selectors::parse(
                    &target,
                    params.label_selector.as_deref(),
                    params.field_selector.as_deref(),
                )?,
                resource_version: params.resource_version.clone(),
            };
            let timeout = parse_number::<u64>("timeoutSeconds", &params.timeout_seconds)?.map(Duration::from_secs);
            let bookmarks = is_true(&params.allow_watch_bookmarks).then_some(state.settings.bookmark_interval);
            let (start, events) = objects.watch(&target, opts).await?;
            Ok(watch::respond(state, target.kind, start, events, watch::Options { timeout, bookmarks, as_table }))
        }
        ("GET", true) => {
            let list = objects.list(&target, &params.list_options(&target)?).await?;
            match as_table {
                Some(request) => ok_json(StatusCode::OK, &table::of_list(target.kind, list, request)),
                None => ok_json(StatusCode::OK, &list),
            }
        }
        ("GET", false) if sub == Subresource::Scale => ok_json(StatusCode::OK, &objects.get_scale(&target).await?),
        ("GET", false) => {
            let object = objects.get(&target).await?;
            match as_table {
                Some(request) => ok_json(StatusCode::OK, &table::of_object(target.kind, object, request, true)),
                None => ok_json(StatusCode::OK, &object),
            }
        }
        ("POST", true) => {
            if target.kind.namespaced && target.namespace.is_none() {
                return Err(ApiError::MethodNotAllowed);
            }
            let written =
                objects.create(&target, body::decode(headers, &body)?, &params.write_options(headers)?).await?;
            written_response(StatusCode::CREATED, written)
        }
        ("PUT", false) => {
            let written =
                objects.update(&target, body::decode(headers, &body)?, sub, &params.write_options(headers)?).await?;
            let written =
                if sub == Subresource::Scale { scale_view(objects, &target, written).await? } else { written };
            written_response(StatusCode::OK, written)
        }
        ("PATCH", false) if body::content_type(headers) == "application/apply-patch+yaml" => {
            if !matches!(sub, Subresource::Main | Subresource::Status) {
                return Err(ApiError::BadRequest(
                    "server-side apply is served on the resource and its status, not on this subresource".into(),
                ));
            }
            let intent = body::yaml(&body)?;
            let manager = params.field_manager.clone().unwrap_or_default();
            let force = is_true(&params.force);
            let (written, created) = objects
                .server_side_apply(&target, (intent, sub), &manager, force, &params.write_options(headers)?)
                .await?;
            written_response(if created { StatusCode::CREATED } else { StatusCode::OK }, written)
        }
        ("PATCH", false) => {
            let kind = patch_kind(headers)?;
            let patch: Value = serde_json::from_slice(&body)
                .map_err(|e| ApiError::BadRequest(format!("the patch body is not valid JSON: {e}")))?;
            let written = objects.patch(&target, patch, kind, sub, &params.write_options(headers)?).await?;
            let written =
                if sub == Subresource::Scale { scale_view(objects, &target, written).await? } else { written };
            written_response(StatusCode::OK, written)
        }
        ("DELETE", false) => {
            let opts = delete_options(&params, headers, &body)?;
            written_response(StatusCode::OK, objects.delete(&target, &opts).await?)
        }
        ("DELETE", true) => {
            let opts = delete_options(&params, headers, &body)?;
            ok_json(StatusCode::OK, &objects.delete_collection(&target, &params.list_options(&target)?, &opts).await?)
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// After a write through `scale`, answer with the Scale view, as Kubernetes does.
async fn scale_view(objects: &crate::objects::Objects, target: &Target, written: Written) -> Result<Written, ApiError> {
    let scale = if written.object.get("kind").and_then(Value::as_str) == Some("Scale") {
        written.object
    } else {
        objects.get_scale(target).await?
    };
    Ok(Written { object: scale, warnings: written.warnings })
}

fn delete_options(params: &Params, headers: &HeaderMap, payload: &Bytes) -> Result<DeleteOptions, ApiError> {
    let mut opts: DeleteOptions = if payload.iter().all(u8::is_ascii_whitespace) {
        DeleteOptions::default()
    } else {
        // JSON from most clients, protobuf from client-go's typed clients.
        serde_json::from_value(body::decode(headers, payload)?)
            .map_err(|e| ApiError::BadRequest(format!("invalid DeleteOptions: {e}")))?
    };
    if let Some(grace) = parse_number("gracePeriodSeconds", &params.grace_period_seconds)? {
        opts.grace_period_seconds = Some(grace);
    }
    if let Some(policy) = &params.propagation_policy {
        opts.propagation_policy = Some(policy.clone());
    }
    if params.dry_run()? {
        opts.dry_run = vec!["All".into()];
    }
    Ok(opts)
}

fn patch_kind(headers: &HeaderMap) -> Result<PatchKind, ApiError> {
    match body::content_type(headers) {
        "application/merge-patch+json" => Ok(PatchKind::Merge),
        "application/json-patch+json" => Ok(PatchKind::Json),
        "application/strategic-merge-patch+json" => Ok(PatchKind::Strategic),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format ({other}) - accepted media types include: \
             application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, \
             application/apply-patch+yaml"
        ))),
    }
}

pub fn ok_json(code: StatusCode, value: &Value) -> Result<Response, ApiError> {
    Ok((code, axum::Json(value)).into_response())
}

/// A write's response: the object, with each warning in a `Warning: 299 - "..."` header.
fn written_response(code: StatusCode, written: Written) -> Result<Response, ApiError> {
    let mut response = (code, axum::Json(&written.object)).into_response();
    for warning in written.warnings {
        let escaped = warning.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(value) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    Ok(response)
}
