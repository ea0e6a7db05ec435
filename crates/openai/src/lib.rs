//! Serde wire types of the OpenAI HTTP API as `thaw serve` speaks it: chat completions,
//! (legacy) completions, models, streaming chunks, usage and the error body
//! `{"error":{"message","type","param","code"}}`.
//!
//! Requests deserialize leniently where OpenAI is lenient (unknown fields are ignored,
//! `stop` is a string or a list, `content` is a string or a list of text parts) and
//! strictly on the types of the fields they know, so a server can answer a wrong type
//! with a 400 naming the field. No HTTP here: this crate is plain data, plus the one
//! request check `thaw serve` and the gateway share, [`check_json_content_type`], which
//! takes the `Content-Type` value as text.

mod content_type;
mod error;
mod request;
mod response;

pub use content_type::{NotJson, check_json_content_type};
pub use error::{ErrorBody, ErrorDetail};
pub use request::{
    ChatCompletionRequest, ChatMessage, CompletionRequest, FunctionCall, FunctionDef,
    JsonSchemaFormat, MessageContent, Prompt, ResponseFormat, StopSpec, StreamOptions, Tool,
    ToolCall,
};
pub use response::{
    ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk, ChatDelta, ChatLogprobs,
    ChatTokenLogprob, CompletionChoice, CompletionLogprobs, CompletionResponse,
    CompletionTokensDetails, FunctionCallDelta, Model, ModelList, PromptTokensDetails,
    ResponseMessage, ToolCallDelta, TopLogprob, Usage,
};
