//! How failures read: one line each, in kubectl's words where kubectl has words for them.

use crate::config::ConfigError;
use crate::manifest::ManifestError;

/// Why a client verb failed. Each variant's `Display` is the whole line the user sees.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A request failed; the message is already rendered (`Error from server (NotFound): ...`,
    /// `Unable to connect to the server: ...`).
    #[error("{0}")]
    Request(String),
    /// The command line asks for something that cannot be done.
    #[error("error: {0}")]
    Usage(String),
    #[error("error: writing output: {0}")]
    Output(#[from] std::io::Error),
    #[error("error: encoding output: {0}")]
    Encode(String),
    /// A remote command (`exec`) failed with this exit code, which the process exits with too.
    #[error("{message}")]
    Exit { code: i32, message: String },
}

impl Error {
    /// A request error rendered kubectl-style.
    pub fn request(err: &kube::Error) -> Self {
        Error::Request(render(err))
    }
}

/// Whether the request got no answer (connection, TLS, timeout), as opposed to the server
/// rejecting it. Per-object loops carry on after a rejection but stop here, since every following
/// request would fail the same way.
pub fn is_unreachable(err: &kube::Error) -> bool {
    matches!(err, kube::Error::HyperError(_) | kube::Error::Service(_))
}

pub fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}

/// Renders an error like kubectl: `Error from server (NotFound): pods "x" not found`, or
/// `Unable to connect to the server: ...` when no answer came back.
pub fn render(err: &kube::Error) -> String {
    render_during(err, None)
}

/// Like [`render`], naming the step and file as kubectl apply/delete do:
/// `Error from server (Invalid): error when creating "f.yaml": Deployment.apps "x" is invalid: ...`.
pub fn render_during(err: &kube::Error, step: Option<(&str, &str)>) -> String {
    let context = step.map(|(what, file)| format!("error when {what} \"{file}\": ")).unwrap_or_default();
    match err {
        kube::Error::Api(status) => {
            let reason = reason(&status.reason, status.code);
            let message = status.message.trim();
            match reason {
                Some(reason) => format!("Error from server ({reason}): {context}{message}"),
                None => format!("Error from server: {context}{message}"),
            }
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            format!("Unable to connect to the server: {context}{}", chain(err))
        }
        other => format!("error: {context}{}", chain(other)),
    }
}

/// The status reason, or one derived from the HTTP code when the server sent none (or kube made up
/// a sentence because the body was not a `Status`).
fn reason(reason: &str, code: u16) -> Option<&str> {
    if !reason.is_empty() && reason.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Some(reason);
    }
    Some(match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        409 => "Conflict",
        410 => "Expired",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => return None,
    })
}

/// An error and its sources on one line, skipping a source already quoted by its parent (kube
/// wraps errors as `ServiceError: <source>`), without kube's variant prefixes.
fn chain(err: &kube::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        let repeated = parts.last().is_some_and(|last| last.contains(&text));
        if !repeated && !text.is_empty() {
            parts.push(text);
        }
        next = e.source();
    }
    let joined = parts.join(": ");
    ["ServiceError: ", "HyperError: "]
        .iter()
        .find_map(|prefix| joined.strip_prefix(prefix))
        .unwrap_or(&joined)
        .to_string()
}

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    fn api(code: u16, reason: &str, message: &str) -> kube::Error {
        let mut status = Status::failure(message, reason);
        status.code = code;
        kube::Error::Api(status.boxed())
    }

    #[test]
    fn server_errors_render_like_kubectl() {
        let err = api(404, "NotFound", "pods \"x\" not found");
        assert_eq!(render(&err), "Error from server (NotFound): pods \"x\" not found");
        assert!(is_not_found(&err));
        let err = api(422, "Invalid", "Deployment.apps \"x\" is invalid: spec.replicas: bad");
        assert_eq!(
            render_during(&err, Some(("creating", "f.yaml"))),
            "Error from server (Invalid): error when creating \"f.yaml\": Deployment.apps \"x\" is invalid: spec.replicas: bad"
        );
    }

    #[test]
    fn a_missing_or_sentence_reason_falls_back_to_the_http_code() {
        let err = api(404, "Failed to parse error data", "404 page not found");
        assert_eq!(render(&err), "Error from server (NotFound): 404 page not found");
        let err = api(418, "", "teapot");
        assert_eq!(render(&err), "Error from server: teapot");
    }
}
