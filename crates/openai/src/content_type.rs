//! The content type an OpenAI endpoint accepts for a request body. Shared by `thaw serve`
//! and the gateway so both refuse the same requests with the same 415 and message.

use crate::ErrorBody;

/// A request body whose `Content-Type` is not JSON. Answered with HTTP
/// [`NotJson::STATUS`] (415) and [`NotJson::body`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Expected a JSON body with `Content-Type: application/json`, got `{got}`.")]
pub struct NotJson {
    /// The header as sent, or `(none)` when it is missing or not readable text.
    pub got: String,
}

impl NotJson {
    /// 415 Unsupported Media Type.
    pub const STATUS: u16 = 415;
    /// The OpenAI `type` of the error body.
    pub const KIND: &'static str = "invalid_request_error";

    /// `{"error": {"message", "type": "invalid_request_error", "param": null, "code": null}}`.
    pub fn body(&self) -> ErrorBody {
        ErrorBody::new(self.to_string(), Self::KIND, None, None)
    }
}

/// Accept `application/json` or any `application/*+json` (parameters such as `charset`
/// ignored, case-insensitive); `content_type` is the header's value as text, `None` when
/// it is missing or not valid text.
pub fn check_json_content_type(content_type: Option<&str>) -> Result<(), NotJson> {
    let ct = content_type.unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")) {
        return Ok(());
    }
    Err(NotJson {
        got: if ct.is_empty() { "(none)" } else { ct }.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_json_and_json_suffixes() {
        for ct in [
            "application/json",
            "application/json; charset=utf-8",
            " Application/JSON ;charset=UTF-8",
            "application/vnd.api+json",
            "application/merge-patch+json",
        ] {
            assert_eq!(check_json_content_type(Some(ct)), Ok(()), "{ct}");
        }
    }

    #[test]
    fn refuses_the_rest_naming_what_came() {
        for (ct, got) in [
            (Some("text/plain"), "text/plain"),
            (Some("application/jsonl"), "application/jsonl"),
            (Some("text/x+json"), "text/x+json"),
            (
                Some("application/x-www-form-urlencoded"),
                "application/x-www-form-urlencoded",
            ),
            (Some(""), "(none)"),
            (None, "(none)"),
        ] {
            let e = check_json_content_type(ct).unwrap_err();
            assert_eq!(e.got, got, "{ct:?}");
            assert_eq!(
                e.to_string(),
                format!("Expected a JSON body with `Content-Type: application/json`, got `{got}`.")
            );
        }
        let b = serde_json::to_value(
            check_json_content_type(Some("text/plain"))
                .unwrap_err()
                .body(),
        )
        .unwrap();
        assert_eq!(
            b,
            serde_json::json!({"error": {
                "message": "Expected a JSON body with `Content-Type: application/json`, got `text/plain`.",
                "type": "invalid_request_error", "param": null, "code": null}})
        );
        assert_eq!(NotJson::STATUS, 415);
    }
}
