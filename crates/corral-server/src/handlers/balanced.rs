//! Model-bearing requests (chat, generate, embed, embeddings, show, `/v1/*`): the instance
//! is picked by the configured policy among the enabled, healthy holders of the model, and
//! a failure before anything reached the client (connection error, timeout, 5xx answer) is
//! retried on another holder, up to `balance.max_attempts`. Once a byte has been relayed,
//! nothing is retried.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse};
use bytes::Bytes;
use corral_balance::{Candidate, Failure, HealthState, PickContext};

use super::native::Spec;
use super::{holders, strip_body_prefix, target, unknown_model, upstream_path, ModelRef};
use crate::error::AppError;
use crate::exchange::{Exchange, Route};
use crate::instances::{InFlight, Queue};
use crate::proxy::{self, Body, Outgoing};
use crate::state::Shared;

/// A model-bearing request to send to one of the model's holders.
pub struct Call<'a> {
    /// The route (its upstream path, and whether it is served under `/ollama`).
    pub spec: Spec,
    /// The method upstream.
    pub method: &'a Method,
    /// The model, as the client named it.
    pub model: &'a str,
    /// The body's routing fields.
    pub fields: &'a ModelRef,
    /// The body to send (its model prefix is stripped per instance).
    pub body: Bytes,
    /// Headers added upstream (user information, `Accept-Encoding: identity`).
    pub extra_headers: Vec<(HeaderName, HeaderValue)>,
    /// Whether the gateway converted the client's request (an OpenAI route) to `spec.path`.
    pub converted: bool,
}

/// The answer of the instance that took a [`Call`].
pub struct Answer {
    /// The response, its headers read, its body not yet.
    pub resp: awc::ClientResponse,
    /// The instance that answered.
    pub target: crate::proxy::Target,
    /// The settings the call was made under.
    pub settings: std::sync::Arc<corral_config::Settings>,
    /// Ends the request's slot on the instance; run it when the body is done or dropped.
    pub on_end: Box<dyn FnOnce()>,
    /// The request's record, to feed the body to and drop when it is done.
    pub exchange: Exchange,
    /// Headers the gateway adds to the answer: how long it waited in the queue, the caller's
    /// `x-ratelimit-*` (kept beside the instance's response, not written into its head).
    pub added: proxy::Added,
}

/// Forwards a model-bearing request with balancing and failover, and relays the answer.
#[allow(clippy::too_many_arguments)]
pub async fn forward(
    req: &HttpRequest,
    shared: &Shared,
    client: &awc::Client,
    spec: Spec,
    method: &Method,
    model: &str,
    fields: &ModelRef,
    body: Bytes,
    extra_headers: Vec<(HeaderName, HeaderValue)>,
) -> Result<HttpResponse, AppError> {
    let call = Call {
        spec,
        method,
        model,
        fields,
        body,
        extra_headers,
        converted: false,
    };
    let answer = dispatch(req, shared, client, call).await?;
    Ok(proxy::relay_with(
        answer.resp,
        &answer.settings.upstream,
        &answer.target,
        method,
        Some(answer.on_end),
        answer.exchange,
        answer.added,
    ))
}

/// Sends a model-bearing request to a holder chosen by the policy, failing over before the
/// first byte, and returns the answer's headers.
///
/// A request that runs a model gets its [`Exchange`] here; one refused before any instance
/// answered is reported with the status it got.
pub async fn dispatch(
    req: &HttpRequest,
    shared: &Shared,
    client: &awc::Client,
    call: Call<'_>,
) -> Result<Answer, AppError> {
    let runs = !(call.spec.path == "/api/show" || call.fields.only_unloads());
    let mut exchange = match Route::of(call.spec.path, call.converted).filter(|_| runs) {
        Some(route) => shared
            .exchanges
            .start(req, route, call.model, route.streams(call.fields.stream)),
        None => Exchange::unwatched(),
    };
    match attempt(req, shared, client, call, &mut exchange).await {
        Ok(mut answer) => {
            answer.exchange = exchange;
            Ok(answer)
        }
        Err(err) => {
            exchange.status(actix_web::ResponseError::status_code(&err).as_u16());
            exchange.failed();
            Err(err)
        }
    }
}

async fn attempt(
    req: &HttpRequest,
    shared: &Shared,
    client: &awc::Client,
    call: Call<'_>,
    exchange: &mut Exchange,
) -> Result<Answer, AppError> {
    let Call {
        spec,
        method,
        model,
        fields,
        body,
        extra_headers,
        converted,
    } = call;
    let (snap, id, holders) = holders(shared, client, model)
        .await?
        .ok_or_else(|| unknown_model(model, spec.owui))?;
    exchange.routed(&id);
    let settings = shared.settings();
    let balance = &settings.balance;
    let name = balance.per_model.get(&id).unwrap_or(&balance.policy);
    let policy = corral_balance::named(name).unwrap_or(&corral_balance::ModelAffinity);
    let health = crate::health_check::policy(&settings);
    let queue = shared.instances.queue(&id);
    // Showing a model's details or unloading it runs nothing: it takes no slot, waits in no
    // queue and does not count the model as loaded there.
    let light = spec.path == "/api/show" || fields.only_unloads();
    // A streamed answer's headers come with its first token: its time says whether it
    // queued at the instance. A whole answer's says how long it was.
    let samples = fields.stream != Some(false);
    // The caller's limits, after authentication and model resolution and before the queue: a
    // refused request never waits for a slot.
    let limited = if light {
        crate::limits::Admitted::default()
    } else {
        match (
            crate::limits::caller_of(req),
            req.app_data::<actix_web::web::Data<Shared>>(),
        ) {
            (Some(caller), Some(data)) => shared.limiter.admit(
                &data.clone().into_inner(),
                &caller,
                (model, &id),
                crate::limits::Announce::for_route(spec.path, converted),
                exchange,
            )?,
            _ => crate::limits::Admitted::default(),
        }
    };
    // Held to the answer's end when the record does not hold it.
    let permit = limited.permit;
    let mut admitted = if light {
        None
    } else {
        let ctx = Admission {
            req,
            shared,
            catalogue: &snap.catalogue,
            id: &id,
            holders: &holders,
            policy,
            queue: &queue,
        };
        Some(admit(&ctx).await?)
    };
    let waited = admitted.as_ref().and_then(|a| a.waited);
    crate::observe::note(req, |n| {
        n.model = Some(model.to_owned());
        n.model_run = Some(id.clone());
        n.admitted = Some(Instant::now());
        n.queue_wait = waited;
    });
    if let Some(waited) = waited {
        exchange.queued(waited);
    }
    // Failover stops at the first-byte deadline, however many attempts remain; the time spent
    // waiting for a slot does not count against it.
    let deadline = proxy::secs(settings.upstream.first_byte_timeout).map(|t| Instant::now() + t);
    let mut tried: Vec<usize> = Vec::new();
    let mut last_error = None;
    for attempt in 0..balance.max_attempts.max(1) {
        let now = Instant::now();
        let remaining: Vec<usize> = holders.iter().copied().filter(|i| !tried.contains(i)).collect();
        if remaining.is_empty() || deadline.is_some_and(|d| now >= d) {
            break;
        }
        // The first attempt runs where admission started it; a failover picks again among
        // the holders not tried yet, and takes a slot there without queueing again.
        let (idx, in_flight) = match admitted.take() {
            Some(started) => (started.idx, Some(started.in_flight)),
            None => {
                let candidates = pool(shared, &snap.catalogue, &id, &remaining, balance.slots, now);
                let Some(idx) = pick(shared, candidates, policy, now) else {
                    break;
                };
                let in_flight = if light {
                    None
                } else {
                    let url = target(shared, idx)?.base_url;
                    let listed = snap.catalogue.loaded_on(idx).contains(&id.as_str());
                    Some(
                        shared
                            .instances
                            .get(&url)
                            .begin(&id, queue.clone(), max_loaded(&settings, idx), listed),
                    )
                };
                (idx, in_flight)
            }
        };
        tried.push(idx);
        if attempt > 0 {
            shared.metrics.failover(&id);
        }
        if in_flight.as_ref().is_some_and(|f| !f.warm()) {
            shared.metrics.cold_load(&id, idx);
        }
        let target = target(shared, idx)?;
        let instance = shared.instances.get(&target.base_url);
        let out = Outgoing {
            method: method.clone(),
            path_and_query: upstream_path(req, spec.path),
            client_headers: req.headers(),
            extra_headers: extra_headers.clone(),
            body: Body::Bytes(strip_body_prefix(shared, idx, body.clone())?),
            patient: false,
        };
        exchange.sending(idx, &target.base_url);
        let started = Instant::now();
        let last_try = attempt + 1 >= balance.max_attempts.max(1) || tried.len() >= holders.len();
        let result = proxy::send(client, &settings.upstream, &target, out).await;
        crate::observe::note(req, |n| {
            n.upstream = Some((started, Instant::now()));
            n.instance = Some(idx);
        });
        if let (Ok(resp), Some(request)) = (&result, &in_flight) {
            let status = resp.status().as_u16();
            if status == 503 || status == 429 {
                instance.busy(request);
            } else if samples && !resp.status().is_server_error() {
                let now = Instant::now();
                if instance.sample(request, now - started, now) {
                    queue.wake();
                }
            }
        }
        match result {
            Ok(resp) if resp.status().is_server_error() && !last_try => {
                let ejected = instance.failed(Failure::Status(resp.status().as_u16()), &health, Instant::now());
                upstream_failed(shared, idx, "status_5xx", ejected);
                tracing::warn!(instance = idx, status = %resp.status(), ejected, "instance failed before answering; trying another");
                last_error = Some(AppError::UpstreamUnreachable {
                    idx,
                    url: target.base_url.clone(),
                    reason: format!("answered {}", resp.status()),
                });
            }
            Ok(resp) => {
                let now = Instant::now();
                if resp.status().is_server_error() {
                    let ejected = instance.failed(Failure::Status(resp.status().as_u16()), &health, now);
                    upstream_failed(shared, idx, "status_5xx", ejected);
                } else if light {
                    instance.answered(&id, fields.unloads());
                } else {
                    instance.succeeded(&id, now - started, fields.unloads(), now);
                }
                let added = proxy::Added {
                    limits: limited.headroom,
                    queue_wait_ms: waited.map(|w| u64::try_from(w.as_millis()).unwrap_or(u64::MAX)),
                };
                exchange.status(resp.status().as_u16());
                let on_end: Box<dyn FnOnce()> = Box::new(move || {
                    drop(in_flight);
                    drop(permit);
                });
                return Ok(Answer {
                    resp,
                    target,
                    settings,
                    on_end,
                    exchange: Exchange::unwatched(),
                    added,
                });
            }
            Err(err @ (AppError::UpstreamUnreachable { .. } | AppError::UpstreamTimeout { .. })) => {
                let why = if matches!(err, AppError::UpstreamTimeout { .. }) {
                    Failure::Timeout
                } else {
                    Failure::Connect
                };
                let ejected = instance.failed(why, &health, Instant::now());
                let kind = if why == Failure::Timeout { "timeout" } else { "connect" };
                upstream_failed(shared, idx, kind, ejected);
                tracing::warn!(instance = idx, error = %err, ejected, "instance failed before answering; trying another");
                last_error = Some(err);
            }
            Err(other) => return Err(other),
        }
    }
    Err(last_error.unwrap_or_else(|| unknown_model(model, spec.owui)))
}

/// Counts an upstream failure, and the ejection it caused.
fn upstream_failed(shared: &Shared, idx: usize, kind: &'static str, ejected: bool) {
    shared.metrics.upstream_error(idx, kind);
    if ejected {
        shared.metrics.ejected(idx);
    }
}

/// The candidates among `remaining` holders: healthy ones, ones due for their half-open
/// probe, and all of them.
struct Pool {
    healthy: Vec<Candidate>,
    probing: Vec<(Candidate, std::sync::Arc<crate::instances::Instance>)>,
    all: Vec<Candidate>,
}

fn pool(
    shared: &Shared,
    catalogue: &corral_registry::Catalogue,
    id: &str,
    remaining: &[usize],
    slots: corral_config::Slots,
    now: Instant,
) -> Pool {
    let settings = shared.settings();
    let mut pool = Pool {
        healthy: Vec::new(),
        probing: Vec::new(),
        all: Vec::new(),
    };
    for &idx in remaining {
        let Some(url) = settings.ollama.base_urls.get(idx) else {
            continue;
        };
        let instance = shared.instances.get(url.trim_end_matches('/'));
        let view = instance.view(id, now);
        let loaded_here = catalogue.loaded_on(idx);
        let conn = settings.ollama.connection(idx);
        let candidate = Candidate {
            idx,
            weight: conn.weight.unwrap_or(1),
            priority: conn.priority.unwrap_or(0),
            in_flight: view.in_flight,
            in_flight_model: view.in_flight_model,
            // `auto`: what the instance's time to first token taught for the model.
            slots: conn.slots.unwrap_or(slots).fixed().unwrap_or(view.limit),
            // The gateway's own mirror of what is loaded where, when it has routed there
            // lately; else what the instance's `/api/ps` said at the last refresh. A request
            // in flight for the model means it is loaded or loading.
            loaded: view.in_flight_model > 0
                || if view.served_count > 0 {
                    view.recently_served
                } else {
                    loaded_here.contains(&id)
                },
            loaded_count: if view.served_count > 0 {
                view.served_count
            } else {
                loaded_here.len()
            },
            max_loaded: max_loaded(&settings, idx),
            ttft: view.ttft,
        };
        if view.selectable {
            pool.healthy.push(candidate.clone());
        } else if matches!(instance.health(now), HealthState::HalfOpen { probing: false }) {
            pool.probing.push((candidate.clone(), instance));
        }
        pool.all.push(candidate);
    }
    pool
}

/// Whether a request would start at once on one of the instances that would serve it.
fn has_free_slot(p: &Pool) -> bool {
    let serving = if p.healthy.is_empty() { &p.all } else { &p.healthy };
    !corral_balance::all_busy(serving)
}

/// Picks from the pool: the healthy holders; else one due for its half-open probe; else
/// any (every holder is out, and trying beats failing outright).
fn pick(shared: &Shared, pool: Pool, policy: &dyn corral_balance::Policy, now: Instant) -> Option<usize> {
    let mut rng = rand::thread_rng();
    let mut ctx = PickContext {
        rng: &mut rng,
        sequence: shared.next_pick(),
    };
    if let Some(idx) = policy.pick(&pool.healthy, &mut ctx) {
        return Some(idx);
    }
    for (candidate, instance) in pool.probing {
        if instance.try_probe(now) {
            return Some(candidate.idx);
        }
    }
    policy.pick(&pool.all, &mut ctx)
}

/// What admission needs to know about a request.
struct Admission<'a> {
    req: &'a HttpRequest,
    shared: &'a Shared,
    catalogue: &'a corral_registry::Catalogue,
    id: &'a str,
    holders: &'a [usize],
    policy: &'a dyn corral_balance::Policy,
    queue: &'a Arc<Queue>,
}

/// A request let in: the instance picked, its slot there taken.
struct Started {
    idx: usize,
    in_flight: InFlight,
    /// How long it waited in the queue, if it did.
    waited: Option<Duration>,
}

/// Lets the request in: at once when nobody waits and a holder has a free slot, else in its
/// place in the model's queue ([`Queue`]), where only the front may take a slot, so nobody
/// overtakes anybody. The check for a slot, the pick and the taking of the slot happen under
/// the queue's lock, so two requests cannot take one slot. A full queue or a wait past
/// `balance.queue_timeout` is a 503 with `Retry-After`.
async fn admit(ctx: &Admission<'_>) -> Result<Started, AppError> {
    let settings = ctx.shared.settings();
    let balance = &settings.balance;
    // Whose turn a waiting request takes is read only when it must wait, outside the lock.
    let mut user: Option<(String, u32)> = None;
    let (notify, id) = loop {
        let mut waiting = ctx.queue.lock();
        if waiting.is_empty() {
            if let Some((idx, in_flight)) = start(ctx, &settings) {
                ctx.shared.metrics.queue_waited(ctx.id, Duration::ZERO);
                return Ok(Started {
                    idx,
                    in_flight,
                    waited: None,
                });
            }
        }
        if waiting.len() >= balance.queue_size {
            ctx.shared.metrics.queue_refused(ctx.id, "full");
            return Err(AppError::Busy {
                retry_after: 1,
                reason: format!("{} requests already wait for model {}", balance.queue_size, ctx.id),
            });
        }
        let Some(user) = &user else {
            drop(waiting);
            user = Some(flow(ctx.req, &balance.queue_weights));
            continue;
        };
        // The front may have missed a slot that came free without a request ending (an
        // instance back in rotation): it checks again.
        if let Some((_, front)) = waiting.front() {
            front.notify_one();
        }
        let notify = Arc::new(tokio::sync::Notify::new());
        let id = waiting.push_weighted(&user.0, user.1, notify.clone());
        break (notify, id);
    };
    // Leaves the queue however the wait ends, including the client going away mid-wait (the
    // request's future is then dropped at the await below).
    let mut turn = Turn {
        queue: ctx.queue,
        id,
        done: false,
    };
    let since = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(balance.queue_timeout);
    loop {
        let waited = tokio::select! {
            waited = tokio::time::timeout_at(deadline, notify.notified()) => waited,
            // The gateway is shutting down and this request will not start in time.
            () = ctx.shared.lifecycle.grace_over() => return Err({
                ctx.shared.metrics.queue_refused(ctx.id, "shutdown");
                AppError::Busy {
                retry_after: 1,
                reason: "the gateway is shutting down; another replica can serve it".to_owned(),
            }}),
        };
        if waited.is_err() {
            ctx.shared.metrics.queue_refused(ctx.id, "timeout");
            let secs = balance.queue_timeout.ceil().max(1.0) as u64;
            return Err(AppError::Busy {
                retry_after: secs,
                reason: format!("no slot for model {} freed within {}s", ctx.id, balance.queue_timeout),
            });
        }
        let mut waiting = ctx.queue.lock();
        if waiting.front().map(|(front, _)| front) != Some(id) {
            continue;
        }
        if let Some((idx, in_flight)) = start(ctx, &settings) {
            waiting.pop();
            turn.done = true;
            // Another slot may be free too (several ended, a limit grew by more than one).
            if let Some((_, next)) = waiting.front() {
                next.notify_one();
            }
            let waited = since.elapsed();
            ctx.shared.metrics.queue_waited(ctx.id, waited);
            return Ok(Started {
                idx,
                in_flight,
                waited: Some(waited),
            });
        }
    }
}

/// Picks a holder with a free slot and takes the slot, if there is one. Called with the
/// queue locked.
fn start(ctx: &Admission<'_>, settings: &corral_config::Settings) -> Option<(usize, InFlight)> {
    let now = Instant::now();
    let candidates = pool(
        ctx.shared,
        ctx.catalogue,
        ctx.id,
        ctx.holders,
        settings.balance.slots,
        now,
    );
    if !has_free_slot(&candidates) {
        return None;
    }
    let idx = pick(ctx.shared, candidates, ctx.policy, now)?;
    let url = settings.ollama.base_urls.get(idx)?.trim_end_matches('/');
    let listed = ctx.catalogue.loaded_on(idx).contains(&ctx.id);
    let in_flight = ctx
        .shared
        .instances
        .get(url)
        .begin(ctx.id, ctx.queue.clone(), max_loaded(settings, idx), listed);
    Some((idx, in_flight))
}

/// The flow a waiting request belongs to: its user, so that users take turns, and the
/// flow's weight: the largest of its groups' `balance.queue_weights` (by name or id), 1
/// without one. Read only when a request must wait; a request without a verified user
/// shares the anonymous flow.
fn flow(req: &HttpRequest, weights: &std::collections::BTreeMap<String, u32>) -> (String, u32) {
    let user = crate::auth::require(req, crate::auth::Level::Any)
        .ok()
        .flatten()
        .and_then(|caller| caller.user);
    let Some(user) = user else {
        return (String::new(), 1);
    };
    let weight = user
        .groups
        .iter()
        .chain(&user.group_names)
        .filter_map(|g| weights.get(g))
        .copied()
        .max()
        .unwrap_or(1);
    (user.id.clone(), weight)
}

/// A request's place in a model's queue; dropped before it was let in, it leaves, and wakes
/// the next request if it was at the front.
struct Turn<'a> {
    queue: &'a Queue,
    id: u64,
    done: bool,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut waiting = self.queue.lock();
        let was_front = waiting.front().map(|(front, _)| front) == Some(self.id);
        waiting.remove(self.id);
        if was_front {
            if let Some((_, next)) = waiting.front() {
                next.notify_one();
            }
        }
    }
}

/// How many models instance `idx` keeps loaded, if configured.
fn max_loaded(settings: &corral_config::Settings, idx: usize) -> Option<usize> {
    settings
        .ollama
        .connection(idx)
        .max_loaded
        .or(Some(settings.balance.max_loaded))
        .filter(|m| *m > 0)
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::Arc;

    use super::Turn;
    use crate::instances::Queue;

    #[test]
    fn a_wait_dropped_midway_leaves_the_queue_and_wakes_the_next() {
        let queue = Queue::default();
        let first = Arc::new(tokio::sync::Notify::new());
        let second = Arc::new(tokio::sync::Notify::new());
        let id = queue.lock().push("", first);
        queue.lock().push("", second.clone());
        let mut wait = Box::pin(async {
            let _turn = Turn {
                queue: &queue,
                id,
                done: false,
            };
            std::future::pending::<()>().await;
        });
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        assert_eq!(queue.lock().len(), 2);
        // A request future dropped while it waits (an HTTP/2 reset, a host's timeout) leaves.
        drop(wait);
        assert_eq!(queue.lock().len(), 1);
        let mut woken = Box::pin(second.notified());
        assert!(
            woken.as_mut().poll(&mut cx).is_ready(),
            "the new front was told to check"
        );
    }
}
