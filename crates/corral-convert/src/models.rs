//! `/v1/models` and `/v1/models/{model}` from model names.

use crate::openai::{ErrorResponse, Model, ModelList};

/// The namespace of an Ollama model name, which OpenAI calls `owned_by`.
///
/// `llama3.2:latest` → `library`; `user/model` → `user`;
/// `hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M` → `bartowski`.
pub fn owned_by(name: &str) -> &str {
    let name = name.split_once('@').map_or(name, |(name, _digest)| name);
    let mut parts = name.rsplit('/');
    parts.next();
    match parts.next() {
        Some(namespace) if !namespace.is_empty() => namespace,
        _ => "library",
    }
}

/// One `/v1/models` entry: `created` is Unix seconds (Ollama's `modified_at`).
pub fn model(id: &str, created: i64) -> Model {
    Model {
        id: id.to_owned(),
        object: "model".to_owned(),
        created,
        owned_by: owned_by(id).to_owned(),
    }
}

/// The `/v1/models` body for `(name, created)` pairs, in the order given; `data` is `[]`
/// when there are none (Ollama's own `/v1` sends `null`, which breaks typed clients).
pub fn model_list<'a>(models: impl IntoIterator<Item = (&'a str, i64)>) -> ModelList {
    ModelList {
        object: "list".to_owned(),
        data: models.into_iter().map(|(id, created)| model(id, created)).collect(),
    }
}

/// The 404 body for a model that does not exist, as Ollama's `/v1` words it.
pub fn model_not_found(name: &str) -> ErrorResponse {
    ErrorResponse::new(404, format!("model '{name}' not found"))
        .with_param("model")
        .with_code("model_not_found")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners() {
        assert_eq!(owned_by("llama3.2:latest"), "library");
        assert_eq!(owned_by("user/model:tag"), "user");
        assert_eq!(
            owned_by("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M"),
            "bartowski"
        );
        assert_eq!(owned_by("localhost:5000/team/m@sha256:abc"), "team");
        assert_eq!(owned_by("/m"), "library");
    }

    #[test]
    fn list_and_single() {
        let list = model_list([("llama3.2:latest", 1_746_403_064), ("me/x:1b", 7)]);
        assert_eq!(
            serde_json::to_string(&list).unwrap(),
            r#"{"object":"list","data":[{"id":"llama3.2:latest","object":"model","created":1746403064,"owned_by":"library"},{"id":"me/x:1b","object":"model","created":7,"owned_by":"me"}]}"#
        );
        assert_eq!(
            serde_json::to_string(&model_list([])).unwrap(),
            r#"{"object":"list","data":[]}"#
        );
        assert_eq!(
            serde_json::to_string(&model_not_found("foo:latest")).unwrap(),
            r#"{"error":{"message":"model 'foo:latest' not found","type":"not_found_error","param":"model","code":"model_not_found"}}"#
        );
    }
}
