//! The `/_sim/` control endpoints: counters, faults and the latch, for tests and benchmarks.

use actix_web::{web, HttpResponse};

use crate::config::Faults;
use crate::state::Sim;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/_sim/stats", web::get().to(stats))
        .route("/_sim/reset", web::post().to(reset))
        .route("/_sim/faults", web::post().to(faults))
        .route("/_sim/latch/release", web::post().to(release))
        .route("/_sim/last_request", web::get().to(last_request));
}

async fn stats(sim: web::Data<Sim>) -> HttpResponse {
    HttpResponse::Ok().json(sim.stats())
}

async fn reset(sim: web::Data<Sim>) -> HttpResponse {
    sim.reset_stats();
    HttpResponse::NoContent().finish()
}

async fn faults(sim: web::Data<Sim>, body: web::Json<Faults>) -> HttpResponse {
    sim.set_faults(body.into_inner());
    HttpResponse::NoContent().finish()
}

async fn release(sim: web::Data<Sim>) -> HttpResponse {
    sim.release_latch();
    HttpResponse::NoContent().finish()
}

/// Which request `/_sim/last_request` shows: with `path`, the last one on that path.
#[derive(serde::Deserialize)]
struct LastQuery {
    path: Option<String>,
}

async fn last_request(sim: web::Data<Sim>, query: web::Query<LastQuery>) -> HttpResponse {
    match &query.path {
        Some(path) => HttpResponse::Ok().json(sim.last_request_to(path)),
        None => HttpResponse::Ok().json(sim.stats().last_request),
    }
}
