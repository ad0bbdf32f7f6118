//! Mounting Corral inside another actix-web service.
//!
//! The host app serves its own `/hello` route and Corral's whole API under `/llm`, so an
//! Ollama client pointed at `http://127.0.0.1:8090/llm` works as if it spoke to Ollama.
//!
//! Run with `cargo run -p corral-server --example mounted`, optionally with
//! `OLLAMA_BASE_URL` set.

use std::collections::HashMap;

use actix_web::{web, App, HttpServer};
use corral_server::Corral;

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let settings = corral_config::load(None, &env).map_err(std::io::Error::other)?;
    let corral = Corral::new(settings);
    corral.start();
    HttpServer::new(move || {
        let corral = corral.clone();
        App::new()
            .route("/hello", web::get().to(|| async { "hello from the host app" }))
            .service(web::scope("/llm").configure(move |cfg| corral.configure(cfg)))
    })
    .workers(2)
    .bind(("127.0.0.1", 8090))?
    .run()
    .await
}
