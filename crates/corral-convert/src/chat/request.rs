//! An OpenAI chat request as an Ollama `/api/chat` request.

use std::collections::HashMap;

use serde_json::Value;

use crate::ollama::{self, Think};
use crate::openai::{self, ChatMessage, ContentPart, ImageUrl, MessageContent, ToolChoice};
use crate::params::{self, take, Sampling};
use crate::ConvertError;

impl openai::ChatCompletionRequest {
    /// Whether the client asked for a stream (OpenAI's default is no).
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether the client asked for a usage chunk at the end of the stream.
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }
}

/// Converts an OpenAI chat request into Ollama's `/api/chat` request.
///
/// * Messages: string or part content; text parts are joined with `\n`; images come as
///   `data:` URLs or bare base64 (http URLs are refused, as Ollama cannot fetch them);
///   `input_audio` data goes to `images`, as Ollama's `/v1` does; assistant `tool_calls` get
///   their JSON-string arguments parsed; `tool` messages keep `tool_call_id` and get
///   `tool_name` from `name` or from the earlier call with that id; `reasoning_content` or
///   `reasoning` becomes `thinking`; `developer` becomes `system`.
/// * `tools` are passed on. `tool_choice`: `none` drops the tools, a named function keeps only
///   that tool, `auto` and `required` keep them all (Ollama cannot force a call).
/// * `response_format`: `json_object` becomes `format:"json"`, `json_schema` its schema.
/// * Sampling fields go to `options` (see `params::options` for the layering); temperature
///   and top_p are not defaulted to 1.0 as Ollama's `/v1` does, so Modelfile defaults apply.
/// * `max_completion_tokens` (or else `max_tokens`) becomes `num_predict`.
/// * `reasoning_effort` / `reasoning.effort` become `think`; `logprobs` and `top_logprobs`
///   are passed on; `stream` is always set explicitly (absent means false).
/// * Ollama fields a client adds (`options`, `keep_alive`, `think`, `format`, `truncate`,
///   `shift`, top-level option names such as `top_k` or `num_ctx`) are carried; other
///   unknown fields are dropped.
pub fn chat_request(req: openai::ChatCompletionRequest) -> Result<ollama::ChatRequest, ConvertError> {
    let stream = req.is_stream();
    let mut extra = req.extra;
    if req.messages.is_empty() {
        return Err(ConvertError::invalid("[] is too short - 'messages'", "messages"));
    }
    params::one_choice(req.n, "n")?;

    let messages = messages(req.messages)?;
    let tools = tools(req.tools, req.tool_choice)?;

    let format = match req.response_format {
        Some(rf) => response_format(rf)?,
        None => take::<Value>(&mut extra, "format")?,
    };
    let effort = match (req.reasoning_effort, req.reasoning.and_then(|r| r.effort)) {
        (Some(effort), _) => Some((effort, "reasoning_effort")),
        (None, Some(effort)) => Some((effort, "reasoning.effort")),
        (None, None) => None,
    };
    let think = match effort {
        Some((effort, param)) => {
            extra.remove("think");
            Some(params::think_from_effort(&effort, param)?)
        }
        None => take::<Think>(&mut extra, "think")?,
    };
    let options = params::options(
        &mut extra,
        Sampling {
            temperature: req.temperature,
            top_p: req.top_p,
            num_predict: match req.max_completion_tokens {
                Some(n) => params::token_limit(Some(n), "max_completion_tokens")?,
                None => params::token_limit(req.max_tokens, "max_tokens")?,
            },
            stop: req.stop,
            seed: req.seed,
            frequency_penalty: req.frequency_penalty,
            presence_penalty: req.presence_penalty,
        },
    )?;
    Ok(ollama::ChatRequest {
        model: req.model,
        messages,
        tools,
        stream: Some(stream),
        format,
        keep_alive: take(&mut extra, "keep_alive")?,
        options,
        think,
        truncate: take(&mut extra, "truncate")?,
        shift: take(&mut extra, "shift")?,
        logprobs: req.logprobs,
        top_logprobs: req.top_logprobs,
    })
}

fn messages(input: Vec<ChatMessage>) -> Result<Vec<ollama::Message>, ConvertError> {
    let mut names_by_call_id: HashMap<String, String> = HashMap::new();
    let mut out = Vec::with_capacity(input.len());
    for (i, m) in input.into_iter().enumerate() {
        let role = match m.role.to_ascii_lowercase().as_str() {
            "developer" => "system".to_owned(),
            "function" => "tool".to_owned(),
            known @ ("system" | "user" | "assistant" | "tool") => known.to_owned(),
            other => {
                return Err(ConvertError::invalid(
                    format!("invalid role {other:?}: must be system, developer, user, assistant, tool or function"),
                    format!("messages[{i}].role"),
                ))
            }
        };
        let (content, images) = content(m.content, i)?;
        let tool_calls = match m.tool_calls {
            Some(calls) if !calls.is_empty() => {
                let mut native = Vec::with_capacity(calls.len());
                for (j, call) in calls.into_iter().enumerate() {
                    if let Some(id) = &call.id {
                        names_by_call_id.insert(id.clone(), call.function.name.clone());
                    }
                    native.push(tool_call(call, i, j)?);
                }
                Some(native)
            }
            _ => None,
        };
        let tool_name = if role == "tool" {
            m.name
                .clone()
                .or_else(|| m.tool_call_id.as_ref().and_then(|id| names_by_call_id.get(id).cloned()))
        } else {
            None
        };
        out.push(ollama::Message {
            role,
            content,
            thinking: m.reasoning_content.or(m.reasoning).filter(|t| !t.is_empty()),
            images: (!images.is_empty()).then_some(images),
            tool_calls,
            tool_name,
            tool_call_id: m.tool_call_id,
        });
    }
    Ok(out)
}

/// The text and the images of one message's content.
fn content(content: Option<MessageContent>, i: usize) -> Result<(String, Vec<String>), ConvertError> {
    let parts = match content {
        None => return Ok((String::new(), Vec::new())),
        Some(MessageContent::Text(text)) => return Ok((text, Vec::new())),
        Some(MessageContent::Parts(parts)) => parts,
    };
    let mut texts: Vec<String> = Vec::new();
    let mut images = Vec::new();
    for (j, part) in parts.into_iter().enumerate() {
        let param = || format!("messages[{i}].content[{j}]");
        match part {
            ContentPart {
                kind, text: Some(text), ..
            } if kind == "text" => texts.push(text),
            ContentPart {
                kind,
                refusal: Some(text),
                ..
            } if kind == "refusal" => texts.push(text),
            ContentPart {
                kind,
                image_url: Some(url),
                ..
            } if kind == "image_url" => {
                let url = match url {
                    ImageUrl::Url(url) | ImageUrl::Object { url, .. } => url,
                };
                images.push(image(url).map_err(|message| ConvertError::invalid(message, param()))?);
            }
            ContentPart {
                kind,
                input_audio: Some(audio),
                ..
            } if kind == "input_audio" => images.push(audio.data),
            ContentPart { kind, .. } => {
                return Err(ConvertError::invalid(
                    format!("unsupported content part {kind:?}"),
                    param(),
                ));
            }
        }
    }
    Ok((texts.join("\n"), images))
}

/// The base64 payload of an image given as a `data:` URL or as bare base64.
fn image(url: String) -> Result<String, String> {
    if let Some(rest) = url.strip_prefix("data:") {
        return match rest.split_once(',') {
            Some((header, data)) if header.ends_with(";base64") => Ok(data.to_owned()),
            _ => Err("image data URLs must be base64-encoded (data:<type>;base64,<data>)".to_owned()),
        };
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return Err("image URLs are not supported, please send the image as base64 encoded data".to_owned());
    }
    Ok(url)
}

fn tool_call(call: openai::ToolCall, i: usize, j: usize) -> Result<ollama::ToolCall, ConvertError> {
    let text = call.function.arguments.trim();
    let arguments = if text.is_empty() {
        Value::Object(Default::default())
    } else {
        serde_json::from_str(text).map_err(|e| {
            ConvertError::invalid(
                format!("invalid tool call arguments: {e}"),
                format!("messages[{i}].tool_calls[{j}].function.arguments"),
            )
        })?
    };
    Ok(ollama::ToolCall {
        id: call.id,
        function: ollama::ToolCallFunction {
            index: Some(u32::try_from(j).unwrap_or(u32::MAX)),
            name: call.function.name,
            arguments,
        },
    })
}

fn tools(
    tools: Option<Vec<openai::Tool>>,
    choice: Option<ToolChoice>,
) -> Result<Option<Vec<ollama::Tool>>, ConvertError> {
    let Some(tools) = tools.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let keep: Option<String> = match choice {
        None => None,
        Some(ToolChoice::Mode(mode)) => match mode.as_str() {
            "auto" | "required" => None,
            "none" => return Ok(None),
            other => {
                return Err(ConvertError::invalid(
                    format!(
                        "invalid tool_choice {other:?} (must be \"none\", \"auto\", \"required\" or a named function)"
                    ),
                    "tool_choice",
                ))
            }
        },
        Some(ToolChoice::Named(named)) => Some(named.function.name),
    };
    if let Some(name) = &keep {
        if !tools.iter().any(|t| &t.function.name == name) {
            return Err(ConvertError::invalid(
                format!("tool_choice names {name:?}, which is not in 'tools'"),
                "tool_choice",
            ));
        }
    }
    let native = tools
        .into_iter()
        .filter(|t| keep.as_ref().is_none_or(|name| &t.function.name == name))
        .map(|t| ollama::Tool {
            kind: t.kind,
            function: ollama::FunctionDefinition {
                name: t.function.name,
                description: t.function.description,
                parameters: t.function.parameters,
            },
        })
        .collect();
    Ok(Some(native))
}

fn response_format(rf: openai::ResponseFormat) -> Result<Option<Value>, ConvertError> {
    match rf.kind.as_str() {
        "text" => Ok(None),
        "json_object" => Ok(Some(Value::from("json"))),
        "json_schema" => Ok(Some(
            rf.json_schema
                .and_then(|s| s.schema)
                .unwrap_or_else(|| Value::from("json")),
        )),
        other => Err(ConvertError::invalid(
            format!("invalid response_format type {other:?} (must be \"text\", \"json_object\" or \"json_schema\")"),
            "response_format.type",
        )),
    }
}
