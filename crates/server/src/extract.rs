//! A JSON body extractor whose every failure is an OpenAI error body: wrong content
//! type, oversized or unreadable body, malformed JSON, and wrong field types (the
//! error names the field by its path, e.g. `messages[0].content`).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

pub struct OpenAiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OpenAiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        thaw_openai::check_json_content_type(ct)?;
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            let status = rej.status();
            let msg = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "The request body is too large.".to_string()
            } else {
                format!("Could not read the request body: {}", rej.body_text())
            };
            ApiError::invalid("", msg).with_status(status)
        })?;
        parse(&bytes).map(OpenAiJson)
    }
}

/// Deserialize `bytes`, mapping errors to a 400 that names the offending field.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner();
        if inner.is_syntax() || inner.is_eof() || inner.is_io() {
            return ApiError::invalid(
                "",
                format!("We could not parse the JSON body of your request: {inner}"),
            );
        }
        let path = e.path().to_string();
        let msg = inner.to_string();
        let param = if path == "." {
            // A missing required field is reported at the root; name the field.
            msg.split('`').nth(1).unwrap_or("").to_string()
        } else {
            path
        };
        if param.is_empty() {
            ApiError::invalid("", format!("Invalid request body: {msg}"))
        } else {
            ApiError::invalid(param.clone(), format!("Invalid value for `{param}`: {msg}"))
        }
    })?;
    de.end().map_err(|e| {
        ApiError::invalid(
            "",
            format!("We could not parse the JSON body of your request: {e}"),
        )
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use thaw_openai::ChatCompletionRequest;

    #[test]
    fn names_the_field() {
        let e =
            parse::<ChatCompletionRequest>(br#"{"model":"m","messages":[],"temperature":"hot"}"#)
                .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temperature"));
        let e = parse::<ChatCompletionRequest>(
            br#"{"model":"m","messages":[{"role":"user","content":7}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].content"));
        let e = parse::<ChatCompletionRequest>(br#"{"messages":[]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("model"));
        let e = parse::<ChatCompletionRequest>(br#"{"model": "#).unwrap_err();
        assert_eq!(e.param, None);
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = parse::<ChatCompletionRequest>(br#"{"model":"m","messages":[]} x"#).unwrap_err();
        assert_eq!(e.param, None);
    }
}
