//! `frontend`: a wasi:http service that calls another one by its Service name. Every request is
//! answered with its own line and the body `http://hello/` (env `BACKEND`) answered; the node
//! resolves `hello` through the cluster DNS with the pod's namespace search path.
//! `samples/manifests/frontend.yaml` deploys it next to `hello`.

use wstd::http::body::Body;
use wstd::http::{Client, Error, Request, Response, StatusCode};

#[wstd::http_server]
async fn main(_request: Request<Body>) -> Result<Response<Body>, Error> {
    let backend = std::env::var("BACKEND").unwrap_or_else(|_| "http://hello/".to_string());
    let pod = std::env::var("POD_NAME").unwrap_or_else(|_| "unknown".to_string());
    let mine = format!("frontend pod={pod} asked {backend}\n");
    let answer = async {
        let request = Request::get(backend.as_str()).body(Body::empty())?;
        let mut response = Client::new().send(request).await?;
        let status = response.status();
        let body = response.body_mut().str_contents().await?.to_string();
        Ok::<_, Error>((status, body))
    };
    match answer.await {
        Ok((status, body)) => Ok(Response::new(format!("{mine}{} {body}", status.as_u16()).into())),
        Err(e) => {
            let mut response = Response::new(format!("{mine}failed: {e:?}\n").into());
            *response.status_mut() = StatusCode::BAD_GATEWAY;
            Ok(response)
        }
    }
}
