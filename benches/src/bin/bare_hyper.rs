//! The HTTP ceiling for single-event ingest: a bare hyper server on the same tokio runtime
//! shape as Vigil that reads each request's body and answers a fixed 201, doing nothing else.
//! `scripts/bench.sh` drives it with the same wrk script as Vigil, in the same run, and gives
//! it the status line's headers and body Vigil itself answered, so both write responses of
//! the same size: the gap between the two is the cost of validating, storing, caching and
//! broadcasting an event.
//!
//! Usage: `bare_hyper ADDR BODY_FILE [HEADER ...]`, each HEADER as `name: value`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(body_file)) = (args.next(), args.next()) else {
        bail!("usage: bare_hyper ADDR BODY_FILE [HEADER ...]");
    };
    let addr: SocketAddr = addr.parse().context("ADDR")?;
    let body = Bytes::from(std::fs::read(&body_file).with_context(|| body_file.clone())?);
    let mut headers = http::HeaderMap::new();
    for header in args {
        let Some((name, value)) = header.split_once(':') else {
            bail!("header {header:?} is not `name: value`");
        };
        headers.append(
            http::HeaderName::try_from(name.trim()).context("header name")?,
            http::HeaderValue::try_from(value.trim()).context("header value")?,
        );
    }
    let answer = Arc::new((body, headers));

    let listener = TcpListener::bind(addr).await.context("bind")?;
    eprintln!("bare_hyper listening on {addr}");
    loop {
        let (stream, _) = listener.accept().await.context("accept")?;
        let _ = stream.set_nodelay(true);
        let answer = Arc::clone(&answer);
        let service = service_fn(move |request: Request<Incoming>| {
            let (body, headers) = &*answer;
            let mut response = Response::new(Full::new(body.clone()));
            *response.status_mut() = StatusCode::CREATED;
            *response.headers_mut() = headers.clone();
            async move {
                // Read the whole body, as Vigil must before it can validate it.
                let _ = request.into_body().collect().await;
                Ok::<_, Infallible>(response)
            }
        });
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
