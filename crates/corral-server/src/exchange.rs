//! One record per model-running request, for whatever watches the traffic (usage metering,
//! metrics, limits).
//!
//! An [`Exchange`] starts when a chat, generate, embed or embeddings request (native, OpenAI
//! or `/ollama/v1`) is about to be routed; the routing notes the instance, the queue wait and
//! when the request went upstream; the relay feeds it the answer's bytes as they pass
//! ([`corral_convert::meter::Meter`] reads the instance's token counts from them); when the
//! answer ends, fails or is dropped (the client went away), it becomes a [`Finished`] record,
//! handed to every registered [`Observer`] on the worker thread. Observers must not block:
//! they bump counters or push into a buffer and return.
//!
//! With no observer registered, nothing is built per request beyond the start time.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::{HttpMessage, HttpRequest};
use arc_swap::ArcSwap;
use corral_convert::meter::Meter;

/// Watches finished requests.
pub trait Observer: Send + Sync + 'static {
    /// Called once per model-running request, on the worker thread, when its answer is done.
    fn finished(&self, record: &Finished);
}

/// Which API a model-running request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `/api/chat` (and `/ollama/api/chat`).
    Chat,
    /// `/api/generate`.
    Generate,
    /// `/api/embed`.
    Embed,
    /// `/api/embeddings` (the legacy one: no counts).
    Embeddings,
    /// `/v1/chat/completions`, converted by the gateway.
    OpenAiChat,
    /// `/v1/completions`, converted by the gateway.
    OpenAiCompletions,
    /// `/v1/embeddings`, converted by the gateway.
    OpenAiEmbeddings,
    /// `/ollama/v1/*`: the instance's own OpenAI layer, passed through.
    OllamaV1,
}

impl Route {
    /// The route of a request the gateway converts to `upstream` (`/api/chat`, …), or of a
    /// native or passed-through one to that path; `None` for a route that runs no model.
    pub fn of(upstream: &str, converted: bool) -> Option<Route> {
        Some(match (upstream, converted) {
            ("/api/chat", false) => Route::Chat,
            ("/api/generate", false) => Route::Generate,
            ("/api/embed", false) => Route::Embed,
            ("/api/embeddings", false) => Route::Embeddings,
            ("/api/chat", true) => Route::OpenAiChat,
            ("/api/generate", true) => Route::OpenAiCompletions,
            ("/api/embed", true) => Route::OpenAiEmbeddings,
            ("/v1/chat/completions" | "/v1/completions" | "/v1/embeddings", false) => Route::OllamaV1,
            _ => return None,
        })
    }

    /// A short stable name: `chat`, `generate`, `embed`, `embeddings`, `openai_chat`,
    /// `openai_completions`, `openai_embeddings`, `ollama_v1`.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Chat => "chat",
            Route::Generate => "generate",
            Route::Embed => "embed",
            Route::Embeddings => "embeddings",
            Route::OpenAiChat => "openai_chat",
            Route::OpenAiCompletions => "openai_completions",
            Route::OpenAiEmbeddings => "openai_embeddings",
            Route::OllamaV1 => "ollama_v1",
        }
    }

    /// Whether the answer to a request whose body says `stream` comes as a stream.
    pub fn streams(self, stream: Option<bool>) -> bool {
        match self {
            Route::Embed | Route::Embeddings | Route::OpenAiEmbeddings => false,
            // The OpenAI shape streams only when asked (a converted request says so).
            Route::OllamaV1 => stream == Some(true),
            _ => stream != Some(false),
        }
    }

    /// Every route, in a stable order.
    pub const ALL: [Route; 8] = [
        Route::Chat,
        Route::Generate,
        Route::Embed,
        Route::Embeddings,
        Route::OpenAiChat,
        Route::OpenAiCompletions,
        Route::OpenAiEmbeddings,
        Route::OllamaV1,
    ];
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The answer was relayed to its end (an error answer included: see the status).
    Completed,
    /// The client went away before the end.
    Cancelled,
    /// The gateway could not complete it: no instance answered, or one broke off.
    Failed,
}

impl Outcome {
    /// `completed`, `cancelled` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Cancelled => "cancelled",
            Outcome::Failed => "failed",
        }
    }
}

/// A model-running request, once its answer is done.
#[derive(Debug, Clone)]
pub struct Finished {
    /// When the request arrived, Unix milliseconds.
    pub at_ms: i64,
    /// The API it came through.
    pub route: Route,
    /// The user, when authentication is on.
    pub user_id: Option<String>,
    /// The API key's id, when the credential was an API key (never the key).
    pub key_id: Option<Arc<str>>,
    /// The user's groups.
    pub groups: Vec<String>,
    /// The model as the client named it.
    pub model_asked: String,
    /// The model routed to: the catalogue id (a preset's base model). Empty when no instance
    /// lists the model: what the client asked is then only in `model_asked`, which is the
    /// client's own text and must not become a metric label.
    pub model_run: String,
    /// The instance that answered: its index in `ollama.base_urls`.
    pub instance: Option<usize>,
    /// Its base URL.
    pub instance_url: Option<String>,
    /// The status the client got.
    pub status: u16,
    /// Whether the answer was streamed.
    pub streamed: bool,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Whether the counts are the gateway's estimate (a stream cut short: the chunks
    /// relayed) rather than the instance's.
    pub estimated: bool,
    /// Lines (NDJSON objects, SSE events) relayed from the instance.
    pub chunks: u64,
    /// Body bytes received from the instance.
    pub bytes: u64,
    /// How long it waited in its model's queue, if it did.
    pub queue_wait: Option<Duration>,
    /// From arrival to the first byte of the answer's body.
    pub ttft: Option<Duration>,
    /// From arrival to the end.
    pub duration: Duration,
    /// The gateway's own time before the request went upstream (queue wait excluded).
    pub overhead: Option<Duration>,
    /// Instances tried (failovers are one less).
    pub attempts: u32,
    /// How it ended.
    pub outcome: Outcome,
}

/// The observers of finished requests; read lock-free on every request.
#[derive(Default)]
pub struct Exchanges {
    observers: ArcSwap<Vec<Arc<dyn Observer>>>,
    /// Whether requests are recorded with nobody observing: a limited request's record holds
    /// its permit, and charges its tokens and releases it when the request ends.
    for_limits: std::sync::atomic::AtomicBool,
}

impl Exchanges {
    /// Adds an observer; every request that starts afterwards is reported to it.
    pub fn observe(&self, observer: Arc<dyn Observer>) {
        self.observers.rcu(|current| {
            let mut next = Vec::clone(current);
            next.push(observer.clone());
            next
        });
    }

    /// Records every request from now on, observed or not: limits are counted through them.
    pub fn record_for_limits(&self) {
        self.for_limits.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether requests are recorded.
    pub fn watched(&self) -> bool {
        self.for_limits.load(std::sync::atomic::Ordering::Acquire) || !self.observers.load().is_empty()
    }

    /// Starts the record of a request to `route` for `model` (as the client named it).
    pub fn start(&self, req: &HttpRequest, route: Route, model: &str, streamed: bool) -> Exchange {
        let observers = self.observers.load_full();
        if observers.is_empty() && !self.for_limits.load(std::sync::atomic::Ordering::Acquire) {
            return Exchange { record: None };
        }
        let arrived = req.extensions().get::<Arrived>().map_or_else(Instant::now, |a| a.0);
        let (user_id, key_id, groups) = match req.extensions().get::<crate::auth::Identified>() {
            Some(crate::auth::Identified(caller)) => (
                caller.user.as_ref().map(|u| u.id.clone()),
                caller.key_id.clone(),
                caller.user.as_ref().map(|u| u.groups.clone()).unwrap_or_default(),
            ),
            None => (None, None, Vec::new()),
        };
        let since_arrival = arrived.elapsed();
        let at = SystemTime::now()
            .checked_sub(since_arrival)
            .unwrap_or_else(SystemTime::now);
        let at_ms = unix_ms(at);
        // The gateway asked an `/ollama/v1` stream for its usage event on the client's behalf.
        let strip_usage_event = req.extensions().contains::<crate::usage::StripUsageEvent>();
        let scope = req.extensions().get::<std::rc::Rc<crate::observe::Scope>>().cloned();
        Exchange {
            record: Some(Box::new(Record {
                strip_usage_event,
                scope,
                observers,
                arrived,
                sent: None,
                first_byte: None,
                meter: Meter::new(),
                outcome: None,
                permit: None,
                finished: Finished {
                    at_ms,
                    route,
                    user_id,
                    key_id,
                    groups,
                    model_asked: model.to_owned(),
                    model_run: String::new(),
                    instance: None,
                    instance_url: None,
                    status: 0,
                    streamed,
                    input_tokens: 0,
                    output_tokens: 0,
                    estimated: false,
                    chunks: 0,
                    bytes: 0,
                    queue_wait: None,
                    ttft: None,
                    duration: Duration::ZERO,
                    overhead: None,
                    attempts: 0,
                    outcome: Outcome::Failed,
                },
            })),
        }
    }
}

/// When the request arrived at the gateway; set by the guard middleware.
#[derive(Debug, Clone, Copy)]
pub struct Arrived(pub Instant);

struct Record {
    /// Whether the usage-only event of an SSE answer is taken out before the client sees it.
    strip_usage_event: bool,
    /// The request's access-log and span notes, given the counts at the end.
    scope: Option<std::rc::Rc<crate::observe::Scope>>,
    observers: Arc<Vec<Arc<dyn Observer>>>,
    arrived: Instant,
    sent: Option<Instant>,
    first_byte: Option<Instant>,
    meter: Meter,
    outcome: Option<Outcome>,
    /// The request's place under its limits, if it was admitted under some.
    permit: Option<crate::limits::Permit>,
    finished: Finished,
}

/// The record of one model-running request in progress; reported when dropped.
#[derive(Default)]
pub struct Exchange {
    record: Option<Box<Record>>,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("watched", &self.record.is_some())
            .finish()
    }
}

impl Exchange {
    /// A record nobody watches.
    pub fn unwatched() -> Exchange {
        Exchange { record: None }
    }

    /// Whether the answer's usage-only event (asked for by the gateway, not the client) is
    /// to be taken out of what the client receives, after it was metered.
    pub fn strips_usage_event(&self) -> bool {
        self.record.as_ref().is_some_and(|r| r.strip_usage_event)
    }

    /// The model is run as `model` (a preset's base, the catalogue id).
    pub fn routed(&mut self, model: &str) {
        if let Some(r) = self.record.as_mut() {
            if r.finished.model_run != model {
                model.clone_into(&mut r.finished.model_run);
            }
        }
    }

    /// The request was admitted under limits: the record holds its permit until it ends,
    /// then charges the tokens it used and releases it. Without a record, the permit comes
    /// back, for the caller to hold until the answer ends.
    pub fn hold(&mut self, permit: crate::limits::Permit) -> Option<crate::limits::Permit> {
        match self.record.as_mut() {
            Some(r) => {
                r.permit = Some(permit);
                None
            }
            None => Some(permit),
        }
    }

    /// The request waited this long in its model's queue.
    pub fn queued(&mut self, waited: Duration) {
        if let Some(r) = self.record.as_mut() {
            r.finished.queue_wait = Some(waited);
        }
    }

    /// The request is being sent to instance `idx` at `url` (once per attempt).
    pub fn sending(&mut self, idx: usize, url: &str) {
        if let Some(r) = self.record.as_mut() {
            r.finished.attempts += 1;
            r.finished.instance = Some(idx);
            if r.finished.instance_url.as_deref() != Some(url) {
                r.finished.instance_url = Some(url.to_owned());
            }
            if r.sent.is_none() {
                r.sent = Some(Instant::now());
            }
        }
    }

    /// The instance answered with `status` (or the gateway refused with it).
    pub fn status(&mut self, status: u16) {
        if let Some(r) = self.record.as_mut() {
            r.finished.status = status;
        }
    }

    /// A chunk of the answer's body passed.
    pub fn chunk(&mut self, bytes: &[u8]) {
        if let Some(r) = self.record.as_mut() {
            if r.first_byte.is_none() && !bytes.is_empty() {
                r.first_byte = Some(Instant::now());
            }
            r.finished.bytes += bytes.len() as u64;
            r.meter.push(bytes);
        }
    }

    /// The answer ended where it should.
    pub fn completed(&mut self) {
        self.end(Outcome::Completed);
    }

    /// The answer could not be completed (the instance broke off, or none answered).
    pub fn failed(&mut self) {
        self.end(Outcome::Failed);
    }

    fn end(&mut self, outcome: Outcome) {
        if let Some(r) = self.record.as_mut() {
            r.outcome.get_or_insert(outcome);
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let Some(mut r) = self.record.take() else { return };
        let now = Instant::now();
        r.meter.finish();
        let counts = r.meter.counts();
        let outcome = r.outcome.unwrap_or(Outcome::Cancelled);
        let f = &mut r.finished;
        f.outcome = outcome;
        f.chunks = r.meter.lines();
        f.duration = now - r.arrived;
        f.ttft = r.first_byte.map(|t| t - r.arrived);
        f.overhead = r
            .sent
            .map(|s| (s - r.arrived).saturating_sub(f.queue_wait.unwrap_or_default()));
        if counts.any() {
            f.input_tokens = counts.input.unwrap_or(0);
            f.output_tokens = counts.output.unwrap_or(0);
        } else if f.bytes > 0 && f.status < 400 {
            // No counts from the instance (a stream cut short, the legacy embeddings route):
            // each relayed line of a stream carries about one token.
            f.estimated = true;
            f.output_tokens = if f.streamed { f.chunks } else { 0 };
        }
        if let Some(scope) = &r.scope {
            scope.finished(&r.finished);
        }
        for observer in r.observers.iter() {
            observer.finished(&r.finished);
        }
        if let Some(permit) = r.permit.take() {
            let f = &r.finished;
            permit.finish(
                (&f.model_asked, &f.model_run),
                f.input_tokens.saturating_add(f.output_tokens),
            );
        }
    }
}

/// `at` in Unix milliseconds (0 before the epoch): the clock usage records and limits count by.
pub(crate) fn unix_ms(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::{Exchanges, Finished, Observer, Outcome, Route};

    #[derive(Default)]
    struct Seen(Mutex<Vec<Finished>>);

    impl Observer for Seen {
        fn finished(&self, record: &Finished) {
            self.0.lock().unwrap().push(record.clone());
        }
    }

    #[test]
    fn a_cut_stream_is_cancelled_with_an_estimate_and_a_whole_one_has_the_counts() {
        let exchanges = Exchanges::default();
        let seen = Arc::new(Seen::default());
        exchanges.observe(seen.clone());
        let req = actix_web::test::TestRequest::default().to_http_request();
        let mut ex = exchanges.start(&req, Route::Chat, "m", true);
        ex.sending(1, "http://a");
        ex.status(200);
        ex.chunk(b"{\"done\":false}\n{\"done\":false}\n");
        drop(ex);
        let mut ex = exchanges.start(&req, Route::Chat, "m", true);
        ex.routed("m:latest");
        ex.sending(0, "http://b");
        ex.sending(1, "http://a");
        ex.status(200);
        ex.chunk(b"{\"done\":false}\n{\"done\":true,\"prompt_eval_count\":5,\"eval_count\":1}\n");
        ex.completed();
        drop(ex);
        let seen = seen.0.lock().unwrap();
        assert_eq!(seen[0].outcome, Outcome::Cancelled);
        assert!(seen[0].estimated);
        assert_eq!((seen[0].input_tokens, seen[0].output_tokens), (0, 2));
        assert_eq!(seen[1].outcome, Outcome::Completed);
        assert!(!seen[1].estimated);
        assert_eq!((seen[1].input_tokens, seen[1].output_tokens), (5, 1));
        assert_eq!((seen[1].attempts, seen[1].instance), (2, Some(1)));
        assert_eq!(seen[1].model_run, "m:latest");
        assert!(seen[1].ttft.is_some() && seen[1].overhead.is_some());
    }

    #[test]
    fn nothing_is_built_when_nobody_watches() {
        let exchanges = Exchanges::default();
        let req = actix_web::test::TestRequest::default().to_http_request();
        let ex = exchanges.start(&req, Route::Embed, "m", false);
        assert!(ex.record.is_none());
    }
}
