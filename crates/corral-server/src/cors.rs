//! CORS as Open WebUI has it: `CORS_ALLOW_ORIGIN` (default `*`), any method and header,
//! credentials allowed, preflight answered by the gateway.
//!
//! Only requests that carry an `Origin` (browsers, on every cross-origin request and every
//! preflight) go through the CORS middleware: `actix-cors` otherwise augments every answer,
//! listing each of its header names in `Access-Control-Expose-Headers` through a hash set and a
//! new string, for clients (scripts, SDKs, servers) that never read it. Those answers carry only
//! the `Vary` header a cache needs to keep them apart from a browser's. Browsers may read every
//! header of an answer, the request id included.

use std::rc::Rc;

use actix_cors::{Cors, CorsMiddleware};
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{self, HeaderValue};
use actix_web::Error;
use futures_util::future::{Either, LocalBoxFuture, Map};
use futures_util::FutureExt as _;

/// The CORS middleware for the configured origins, applied to requests with an `Origin`.
pub fn cors(origins: &[String]) -> BrowserCors {
    let base = Cors::default()
        .allow_any_method()
        .allow_any_header()
        .expose_any_header()
        .supports_credentials()
        .max_age(43_200);
    BrowserCors(if origins.iter().any(|o| o == "*") {
        // Reflects the caller's origin, which works with credentials where a literal `*` would not.
        base.allow_any_origin()
    } else {
        origins.iter().fold(base, |cors, origin| cors.allowed_origin(origin))
    })
}

/// `actix-cors` for requests that carry an `Origin`; the rest pass straight through.
pub struct BrowserCors(Cors);

/// What `actix-cors` puts in `Vary`, so a cache keeps a browser's answer apart.
const VARY: HeaderValue =
    HeaderValue::from_static("Origin, Access-Control-Request-Method, Access-Control-Request-Headers");

impl<S, B> Transform<S, ServiceRequest> for BrowserCors
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type InitError = ();
    type Transform = BrowserCorsMiddleware<S>;
    type Future = LocalBoxFuture<'static, Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        let service = Rc::new(service);
        let cors = self.0.new_transform(service.clone());
        Box::pin(async move {
            Ok(BrowserCorsMiddleware {
                cors: cors.await?,
                service,
            })
        })
    }
}

/// See [`BrowserCors`].
pub struct BrowserCorsMiddleware<S> {
    cors: CorsMiddleware<Rc<S>>,
    service: Rc<S>,
}

type Plain<S, B> = Map<
    <S as Service<ServiceRequest>>::Future,
    fn(Result<ServiceResponse<B>, Error>) -> Result<ServiceResponse<EitherBody<B>>, Error>,
>;

impl<S, B> Service<ServiceRequest> for BrowserCorsMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = Either<LocalBoxFuture<'static, Result<Self::Response, Error>>, Plain<S, B>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        if req.headers().contains_key(header::ORIGIN) {
            let call = self.cors.call(req);
            return Either::Left(Box::pin(async move {
                let mut res = call.await?;
                expose_request_id(res.headers_mut());
                Ok(res)
            }));
        }
        Either::Right(self.service.call(req).map(plain as fn(_) -> _))
    }
}

/// Adds the request id to the headers a browser may read: `actix-cors` lists the answer's
/// headers as it sees them, and the id is set further out (`observe`), on every answer.
fn expose_request_id(headers: &mut header::HeaderMap) {
    let Some(exposed) = headers.get(header::ACCESS_CONTROL_EXPOSE_HEADERS) else {
        return;
    };
    let Ok(text) = exposed.to_str() else { return };
    if text
        .split(',')
        .any(|h| h.trim().eq_ignore_ascii_case(crate::observe::REQUEST_ID))
    {
        return;
    }
    if let Ok(value) = HeaderValue::from_str(&format!("{text}, {}", crate::observe::REQUEST_ID)) {
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, value);
    }
}

/// An answer to a request without `Origin`: `Vary` added, nothing else.
fn plain<B>(res: Result<ServiceResponse<B>, Error>) -> Result<ServiceResponse<EitherBody<B>>, Error> {
    res.map(|mut res| {
        res.headers_mut().insert(header::VARY, VARY);
        res.map_into_left_body()
    })
}
