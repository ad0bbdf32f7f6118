//! `/v1/chat/completions` ↔ `/api/chat`: the request, the whole answer, and the stream.

mod request;
mod response;
mod stream;

pub use request::chat_request;
pub use response::chat_completion;
pub use stream::{ChatChunker, ChatStream};

#[cfg(test)]
mod tests;
