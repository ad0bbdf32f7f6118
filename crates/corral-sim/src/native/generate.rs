//! `/api/chat` and `/api/generate`: validation, queueing, loading, and the paced NDJSON
//! stream with its faults.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use tokio::sync::OwnedSemaphorePermit;

use super::{admit, decode, error, model_field, ok_json, str_field};
use crate::config::{Faults, SimModel};
use crate::state::{Sim, Ticket};
use crate::text::{self, Words};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Generate,
}

/// Everything decided about a generation before the first byte.
struct Plan {
    kind: Kind,
    echo: String,
    model: SimModel,
    think_chunks: usize,
    content_chunks: usize,
    tool_call: Option<Value>,
    json_format: bool,
    length: bool,
    prompt_tokens: usize,
    keep_alive: Option<Duration>,
    raw: bool,
    seed: u64,
}

pub async fn chat(sim: web::Data<Sim>, req: HttpRequest, body: Bytes) -> HttpResponse {
    run(sim.into_inner(), req, body, Kind::Chat).await
}

pub async fn generate(sim: web::Data<Sim>, req: HttpRequest, body: Bytes) -> HttpResponse {
    run(sim.into_inner(), req, body, Kind::Generate).await
}

async fn run(sim: Arc<Sim>, req: HttpRequest, body: Bytes, kind: Kind) -> HttpResponse {
    let route = if kind == Kind::Chat {
        "/api/chat"
    } else {
        "/api/generate"
    };
    let map = match decode(&body) {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    let name = model_field(&map);
    let ticket = match admit(&sim, &req, route, &body, Some(&name)) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let stream = map.get("stream").and_then(Value::as_bool).unwrap_or(true);
    let plan = match validate(&sim, &map, kind, &name) {
        Ok(Validated::Plan(plan)) => plan,
        Ok(Validated::LoadOnly {
            model,
            unload,
            keep_alive,
        }) => {
            let resp = load_only(&sim, kind, &name, &model, unload, keep_alive).await;
            ticket.finish();
            return resp;
        }
        Err(resp) => {
            ticket.finish();
            return resp;
        }
    };
    let Some(permit) = sim.slot(&plan.model.name).await else {
        ticket.finish();
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "server busy, please try again.  maximum pending requests exceeded",
        );
    };
    let started = Instant::now();
    let load = sim.load(&plan.model).await;
    let faults = sim.faults();
    if !faults.header_delay.is_zero() {
        tokio::time::sleep(faults.header_delay).await;
    }
    let gen = Gen {
        sim: sim.clone(),
        ticket: Some(ticket),
        _permit: permit,
        words: Words::new(plan.seed),
        plan,
        faults,
        sent: 0,
        started,
        load,
        delay: delay_per_token(sim.config.tokens_per_sec),
        text: String::new(),
        thinking: String::new(),
    };
    if stream {
        stream_response(gen).await
    } else {
        single_response(gen).await
    }
}

enum Validated {
    Plan(Plan),
    LoadOnly {
        model: SimModel,
        unload: bool,
        keep_alive: Option<Duration>,
    },
}

fn validate(sim: &Sim, map: &Map<String, Value>, kind: Kind, name: &str) -> Result<Validated, HttpResponse> {
    if name.is_empty() {
        return Err(match kind {
            Kind::Chat => error(StatusCode::BAD_REQUEST, "model is required"),
            Kind::Generate => error(StatusCode::NOT_FOUND, "model '' not found"),
        });
    }
    let Some(model) = sim.find(name) else {
        return Err(error(StatusCode::NOT_FOUND, &format!("model '{name}' not found")));
    };
    let keep_alive = text::keep_alive(map.get("keep_alive")).map_err(|e| error(StatusCode::BAD_REQUEST, &e))?;
    let full = format!("registry.ollama.ai/library/{}", model.name);
    let tools = map.get("tools").and_then(Value::as_array).filter(|t| !t.is_empty());
    if kind == Kind::Chat && tools.is_some() && !model.can("tools") {
        return Err(error(
            StatusCode::BAD_REQUEST,
            &format!("{full} does not support tools"),
        ));
    }
    if !model.can("completion") {
        let what = if kind == Kind::Chat { "chat" } else { "generate" };
        return Err(error(
            StatusCode::BAD_REQUEST,
            &format!("\"{name}\" does not support {what}"),
        ));
    }
    let think = match map.get("think") {
        None | Some(Value::Null) => model.can("thinking"),
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if ["low", "medium", "high", "max"].contains(&s.as_str()) => true,
        Some(other) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "invalid think value: {other} (must be \"high\", \"medium\", \"low\", \"max\", true, or false)"
                ),
            ))
        }
    };
    if think && !model.can("thinking") {
        return Err(error(
            StatusCode::BAD_REQUEST,
            &format!("\"{name}\" does not support thinking"),
        ));
    }
    let options = map.get("options").and_then(Value::as_object);
    if let Some(opts) = options {
        for (key, want) in [
            ("temperature", "float32"),
            ("top_p", "float32"),
            ("num_predict", "integer"),
            ("num_ctx", "integer"),
        ] {
            if let Some(v) = opts.get(key).filter(|v| !v.is_null()) {
                if !v.is_number() {
                    return Err(error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &format!("option \"{key}\" must be of type {want}"),
                    ));
                }
            }
        }
        if let Some(stop) = opts.get("stop").filter(|v| !v.is_null()) {
            if !stop.is_array() {
                return Err(error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "option \"stop\" must be of type array",
                ));
            }
        }
    }
    let prompt_text = match kind {
        Kind::Chat => map.get("messages").and_then(Value::as_array).map(|msgs| {
            msgs.iter()
                .filter_map(|m| m.get("content").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n")
        }),
        Kind::Generate => str_field(map, "prompt").map(str::to_owned),
    };
    let empty = match kind {
        Kind::Chat => map.get("messages").and_then(Value::as_array).is_none_or(Vec::is_empty),
        Kind::Generate => prompt_text.as_deref().is_none_or(str::is_empty),
    };
    if empty {
        return Ok(Validated::LoadOnly {
            unload: keep_alive == Some(Duration::ZERO),
            model,
            keep_alive,
        });
    }
    let prompt_text = prompt_text.unwrap_or_default();
    let num_predict = options
        .and_then(|o| o.get("num_predict"))
        .and_then(Value::as_i64)
        .filter(|n| *n >= 0);
    let (content_chunks, length) = match num_predict {
        Some(n) => (usize::try_from(n).unwrap_or(0), true),
        None => (sim.config.default_chunks, false),
    };
    let seed = options
        .and_then(|o| o.get("seed"))
        .and_then(Value::as_u64)
        .unwrap_or_else(|| text::hash(&prompt_text))
        ^ sim.config.seed;
    let format = map.get("format").filter(|f| !f.is_null() && f.as_str() != Some(""));
    if let Some(f) = format {
        if !(f.as_str() == Some("json") || f.is_object()) {
            return Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!(
                    "invalid format: {:?}; expected \"json\" or a valid JSON Schema object",
                    f.to_string()
                ),
            ));
        }
    }
    let tool_call = tools
        .filter(|_| kind == Kind::Chat)
        .and_then(|t| t.first())
        .map(tool_call_for);
    Ok(Validated::Plan(Plan {
        kind,
        echo: name.to_owned(),
        think_chunks: if think { 3 } else { 0 },
        content_chunks: if tool_call.is_some() { 0 } else { content_chunks },
        length: length && tool_call.is_none(),
        tool_call,
        json_format: format.is_some(),
        prompt_tokens: prompt_text.split_whitespace().count() + 10,
        keep_alive,
        raw: map.get("raw").and_then(Value::as_bool).unwrap_or(false),
        seed,
        model,
    }))
}

/// A call of the first tool, with a string for each required parameter.
fn tool_call_for(tool: &Value) -> Value {
    let f = &tool["function"];
    let mut args = Map::new();
    if let Some(required) = f["parameters"]["required"].as_array() {
        for name in required.iter().filter_map(Value::as_str) {
            // A boolean parameter gets `true`, a shape a gateway must not take for a stream's end.
            let value = match f["parameters"]["properties"][name]["type"].as_str() {
                Some("boolean") => Value::Bool(true),
                _ => Value::String("Paris".to_owned()),
            };
            args.insert(name.to_owned(), value);
        }
    }
    json!({ "id": "call_sim00001", "function": { "index": 0, "name": f["name"].as_str().unwrap_or("tool"), "arguments": args } })
}

async fn load_only(
    sim: &Sim,
    kind: Kind,
    name: &str,
    model: &SimModel,
    unload: bool,
    keep_alive: Option<Duration>,
) -> HttpResponse {
    if unload {
        sim.unload(&model.name);
    } else {
        sim.load(model).await;
        sim.touch(&model.name, keep_alive);
    }
    let reason = if unload { "unload" } else { "load" };
    let mut v = base(kind, name);
    match kind {
        Kind::Chat => v["message"] = json!({ "role": "assistant", "content": "" }),
        Kind::Generate => v["response"] = json!(""),
    }
    v["done"] = json!(true);
    v["done_reason"] = json!(reason);
    ok_json(&v)
}

fn base(kind: Kind, name: &str) -> Value {
    let mut v = json!({ "model": name, "created_at": text::now_utc() });
    if kind == Kind::Generate {
        v["response"] = json!("");
    }
    v
}

fn delay_per_token(tps: f64) -> Option<Duration> {
    (tps > 0.0 && tps.is_finite()).then(|| Duration::from_secs_f64(1.0 / tps))
}

/// A generation in progress; dropped early, its ticket counts a cancellation.
struct Gen {
    sim: Arc<Sim>,
    ticket: Option<Ticket>,
    _permit: OwnedSemaphorePermit,
    plan: Plan,
    words: Words,
    faults: Faults,
    sent: usize,
    started: Instant,
    load: Duration,
    delay: Option<Duration>,
    text: String,
    thinking: String,
}

enum Step {
    Line(Bytes),
    Drop,
    End,
}

impl Gen {
    fn total(&self) -> usize {
        self.plan.think_chunks + self.plan.content_chunks + usize::from(self.plan.tool_call.is_some()) + 1
    }

    /// The next step of the stream, after pacing and faults.
    async fn step(&mut self) -> Step {
        if self.sent >= self.total() {
            return Step::End;
        }
        let n = self.sent;
        if self.faults.latch_after_chunks == Some(n) {
            self.sim.wait_latch().await;
        }
        if self.faults.stall_after_chunks == Some(n) {
            std::future::pending::<()>().await;
        }
        if self.faults.drop_after_chunks == Some(n) {
            self.finish();
            // Let the chunks already written reach the client: actix drops its unsent
            // buffer when a body fails.
            tokio::time::sleep(Duration::from_millis(20)).await;
            return Step::Drop;
        }
        if self.faults.error_after_chunks == Some(n) {
            self.sent = self.total();
            self.finish();
            let line = format!(
                "{}\n",
                json!({ "error": "an error was encountered while running the model: simulated fault" })
            );
            return Step::Line(Bytes::from(line));
        }
        if n > 0 {
            if let Some(d) = self.delay {
                tokio::time::sleep(d).await;
            }
        }
        let value = self.chunk(n);
        self.sent += 1;
        if self.sent == self.total() {
            self.finish();
        }
        Step::Line(Bytes::from(format!("{value}\n")))
    }

    fn chunk(&mut self, n: usize) -> Value {
        let p = &self.plan;
        let think_end = p.think_chunks;
        let content_end = think_end + p.content_chunks;
        let mut v = base(p.kind, &p.echo);
        let (content, thinking, tools) = if n < think_end {
            let t = self.words.token(n == 0);
            self.thinking.push_str(&t);
            (String::new(), Some(t), None)
        } else if n < content_end {
            let i = n - think_end;
            let mut t = self.words.token(i == 0);
            if p.json_format {
                if i == 0 {
                    t = format!("{{\"answer\": \"{}", t.trim());
                }
                if i + 1 == p.content_chunks {
                    t.push_str("\"}");
                }
            }
            self.text.push_str(&t);
            (t, None, None)
        } else if n < self.total() - 1 {
            (String::new(), None, p.tool_call.clone())
        } else {
            return self.final_chunk();
        };
        match p.kind {
            Kind::Chat => {
                let mut msg = json!({ "role": "assistant", "content": content });
                if let Some(t) = thinking {
                    msg["thinking"] = json!(t);
                }
                if let Some(call) = tools {
                    msg["tool_calls"] = json!([call]);
                }
                v["message"] = msg;
            }
            Kind::Generate => {
                v["response"] = json!(content);
                if let Some(t) = thinking {
                    v["thinking"] = json!(t);
                }
            }
        }
        v["done"] = json!(false);
        v
    }

    fn final_chunk(&self) -> Value {
        let p = &self.plan;
        let mut v = base(p.kind, &p.echo);
        if p.kind == Kind::Chat {
            v["message"] = json!({ "role": "assistant", "content": "" });
        }
        v["done"] = json!(true);
        v["done_reason"] = json!(if p.length { "length" } else { "stop" });
        if p.kind == Kind::Generate && !p.raw {
            v["context"] = json!((0..p.prompt_tokens + p.content_chunks)
                .map(|i| 1000 + i)
                .collect::<Vec<_>>());
        }
        self.metrics(&mut v);
        v
    }

    fn metrics(&self, v: &mut Value) {
        let total = self.started.elapsed();
        let eval_count = self.plan.content_chunks + self.plan.think_chunks + usize::from(self.plan.tool_call.is_some());
        let eval = self
            .delay
            .map_or(Duration::from_micros(5) * eval_count as u32, |d| d * eval_count as u32);
        v["total_duration"] = json!(text::nanos(total.max(self.load + eval)));
        v["load_duration"] = json!(text::nanos(self.load));
        v["prompt_eval_count"] = json!(self.plan.prompt_tokens);
        self.sim.served(self.plan.prompt_tokens, eval_count);
        v["prompt_eval_duration"] = json!(text::nanos(Duration::from_micros(40) * self.plan.prompt_tokens as u32));
        if eval_count > 0 {
            v["eval_count"] = json!(eval_count);
            v["eval_duration"] = json!(text::nanos(eval));
        }
    }

    fn finish(&mut self) {
        self.sim.touch(&self.plan.model.name, self.plan.keep_alive);
        if let Some(t) = self.ticket.take() {
            t.finish();
        }
    }
}

async fn stream_response(mut gen: Gen) -> HttpResponse {
    // Headers go out with the first object, as Ollama sends them.
    let first = match gen.step().await {
        Step::Line(b) => b,
        Step::Drop | Step::End => Bytes::new(),
    };
    let rest = futures_util::stream::unfold(gen, |mut gen| async move {
        match gen.step().await {
            Step::Line(b) => Some((Ok::<Bytes, actix_web::Error>(b), gen)),
            Step::Drop => {
                gen.sent = gen.total();
                Some((
                    Err(actix_web::error::ErrorInternalServerError("simulated connection drop")),
                    gen,
                ))
            }
            Step::End => None,
        }
    });
    let body = futures_util::StreamExt::chain(
        futures_util::stream::once(async move { Ok::<Bytes, actix_web::Error>(first) }),
        rest,
    );
    HttpResponse::Ok().content_type("application/x-ndjson").streaming(body)
}

async fn single_response(mut gen: Gen) -> HttpResponse {
    let mut tool_calls = Vec::new();
    loop {
        match gen.step().await {
            Step::Line(b) => {
                let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
                if let Some(e) = v.get("error").and_then(Value::as_str) {
                    return error(StatusCode::INTERNAL_SERVER_ERROR, e);
                }
                if let Some(calls) = v["message"]["tool_calls"].as_array() {
                    tool_calls.extend(calls.iter().cloned());
                }
                if v["done"] == json!(true) {
                    let mut out = v;
                    match gen.plan.kind {
                        Kind::Chat => {
                            out["message"]["content"] = json!(gen.text);
                            if !gen.thinking.is_empty() {
                                out["message"]["thinking"] = json!(gen.thinking);
                            }
                            if !tool_calls.is_empty() {
                                out["message"]["tool_calls"] = json!(tool_calls);
                            }
                        }
                        Kind::Generate => {
                            out["response"] = json!(gen.text);
                            if !gen.thinking.is_empty() {
                                out["thinking"] = json!(gen.thinking);
                            }
                        }
                    }
                    return ok_json(&out);
                }
            }
            Step::Drop => return HttpResponse::InternalServerError().finish(),
            Step::End => return error(StatusCode::INTERNAL_SERVER_ERROR, "stream ended early"),
        }
    }
}
