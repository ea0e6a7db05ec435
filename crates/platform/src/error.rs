//! The gateway's errors: the server crate's OpenAI error body ([`ApiError`]) with the
//! statuses only a gateway has (auth, quotas, replicas that fail).

use axum::http::StatusCode;
pub use thaw_server::ApiError as GatewayError;

use crate::store::StoreError;

fn make(
    status: StatusCode,
    kind: &'static str,
    code: Option<&'static str>,
    message: String,
) -> GatewayError {
    GatewayError {
        status,
        message,
        kind,
        param: None,
        code,
        retry_after: None,
    }
}

/// Constructors for the gateway's own failures.
pub trait GatewayErrors {
    fn unauthorized(message: &str) -> GatewayError;
    fn forbidden(message: &str) -> GatewayError;
    fn rate_limited(message: String, retry_after: u32) -> GatewayError;
    fn quota(message: String, retry_after: u32) -> GatewayError;
    fn bad_gateway(message: String) -> GatewayError;
    fn bad_request(message: String) -> GatewayError;
    fn not_found(message: String) -> GatewayError;
}

impl GatewayErrors for GatewayError {
    fn unauthorized(message: &str) -> GatewayError {
        make(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("invalid_api_key"),
            message.into(),
        )
    }
    fn forbidden(message: &str) -> GatewayError {
        make(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            Some("forbidden"),
            message.into(),
        )
    }
    fn rate_limited(message: String, retry_after: u32) -> GatewayError {
        let mut e = make(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            Some("rate_limit_exceeded"),
            message,
        );
        e.retry_after = Some(retry_after);
        e
    }
    fn quota(message: String, retry_after: u32) -> GatewayError {
        let mut e = make(
            StatusCode::TOO_MANY_REQUESTS,
            "insufficient_quota",
            Some("insufficient_quota"),
            message,
        );
        e.retry_after = Some(retry_after);
        e
    }
    fn bad_gateway(message: String) -> GatewayError {
        make(
            StatusCode::BAD_GATEWAY,
            "server_error",
            Some("replica_failed"),
            message,
        )
    }
    fn bad_request(message: String) -> GatewayError {
        make(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            message,
        )
    }
    fn not_found(message: String) -> GatewayError {
        make(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("not_found"),
            message,
        )
    }
}

impl From<StoreError> for GatewayError {
    fn from(e: StoreError) -> Self {
        tracing::error!("{e}");
        GatewayError::internal("The gateway's database failed; see the gateway log.")
    }
}
