//! The slave's HTTP surface: `GET|HEAD /blob/{hash}` (from [`hummel_store::http`], behind the
//! read token when one is configured), `GET /health` and `GET /metrics` (behind the metrics or
//! read token when either is configured: `X-HUMMEL-TOKEN`, or `Authorization: Bearer`).
//!
//! Packs are not re-verified on serve (16 MiB per range request would be too slow): commit
//! verifies every new pack, and scrub catches rot.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use hummel_proto::ApiErrorBody;
use hummel_proto::api::{HEALTH, Health, METRICS};
use hummel_proto::auth::{TOKEN_HEADER, TokenRefusal, check_token};

use crate::Slave;

/// Tokens accepted for `/blob` when a read token is configured.
#[derive(Clone)]
struct BlobTokens {
    read: String,
    slave: String,
}

pub(crate) fn router(slave: &Slave) -> Router {
    let cfg = slave.config();
    let limit = cfg
        .serve_limit
        .map(|bps| Arc::new(hummel_store::http::RateLimit::new(bps)));
    let mut blob = hummel_store::http::router_with_limit(slave.store().clone(), limit);
    if let Some(read) = &cfg.read_token {
        let tokens = BlobTokens {
            read: read.clone(),
            slave: cfg.slave_token.clone(),
        };
        blob = blob.layer(middleware::from_fn_with_state(tokens, require_token));
    }
    let mut metrics_route = Router::new().route(METRICS, get(metrics));
    let metrics_tokens: Vec<String> = [&cfg.metrics_token, &cfg.read_token]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    if !metrics_tokens.is_empty() {
        metrics_route = metrics_route.route_layer(middleware::from_fn_with_state(
            metrics_tokens,
            require_metrics_token,
        ));
    }
    Router::new()
        .route(HEALTH, get(health))
        .merge(metrics_route)
        .with_state(slave.clone())
        .merge(blob)
        .fallback(not_found)
        .layer(middleware::from_fn(hummel_store::http::handler_deadline))
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(ApiErrorBody {
            code: code.into(),
            message: message.into(),
        }),
    )
        .into_response()
}

async fn require_token(
    State(tokens): State<BlobTokens>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let presented = headers.get(TOKEN_HEADER).map(|v| v.as_bytes());
    match check_token(presented, &[&tokens.read, &tokens.slave]) {
        Ok(()) => {}
        Err(TokenRefusal::Missing) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this slave wants a read token in X-HUMMEL-TOKEN",
            );
        }
        Err(TokenRefusal::Wrong) => {
            return error(StatusCode::FORBIDDEN, "forbidden", "wrong token");
        }
    }
    next.run(req).await
}

/// `/metrics` with one of `tokens`, in the token header or as `Authorization: Bearer`.
async fn require_metrics_token(
    State(tokens): State<Vec<String>>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().as_bytes());
    let presented = headers.get(TOKEN_HEADER).map(|v| v.as_bytes()).or(bearer);
    let accepted: Vec<&str> = tokens.iter().map(String::as_str).collect();
    match check_token(presented, &accepted) {
        Ok(()) => next.run(req).await,
        Err(TokenRefusal::Missing) => error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this slave's metrics want the metrics or read token in X-HUMMEL-TOKEN",
        ),
        Err(TokenRefusal::Wrong) => error(StatusCode::FORBIDDEN, "forbidden", "wrong token"),
    }
}

async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        role: "slave".into(),
        api_version: hummel_proto::API_VERSION,
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

async fn metrics(State(slave): State<Slave>) -> Response {
    let text = slave.metrics().render(slave.store(), slave.config().quota);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}
