//! The API as a contract: the OpenAPI 3.1 description at `GET /openapi.json`, generated
//! from the handlers' own types and `#[utoipa::path]` attributes, never written by hand.
//!
//! Each handler declares the answers that are its own (201 the room, 409 username taken).
//! The answers every handler of a kind shares are added here by [`CrossCutting`], from
//! what the operation is: one with a JSON body is read by `JsonObject`, so it can answer
//! 400, 408, 413, 415 and 422; one that needs credentials is guarded by `Identity`, so it can
//! answer 401 (with `WWW-Authenticate`) and, for a write, 403 `csrf-failed`. A test
//! (`tests/it/openapi.rs`) compares the description with the routes the router answers.

use std::sync::LazyLock;

use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use utoipa::openapi::link::Link;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::schema::{Object, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Header, OpenApi as Document, Ref, RefOr, Response as Answer};
use utoipa::{Modify, OpenApi};

use crate::{
    account, auth, chat, error, feed, health, metrics, oauth, rooms, web, wellknown, AppState,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "herd",
        description = "A horizontally scalable backend: stateless JWT identity, chat over \
            WebSocket. Every error is `application/problem+json` (RFC 9457) whose `type` is \
            `urn:herd:problem:<code>`; every response carries `x-herd-replica`, the replica \
            that served it. The WebSocket protocol is in `docs/protocol.md`, its frames in \
            `docs/protocol.schema.json`.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    paths(
        auth::signup, auth::login, auth::refresh, auth::logout, auth::me,
        account::list, account::end_one, account::end_others, account::end_all,
        account::change_password, account::delete_account,
        rooms::create, rooms::mine, rooms::join, rooms::leave, rooms::send, rooms::history,
        chat::upgrade,
        wellknown::jwks, wellknown::openid_configuration, wellknown::authorization_server,
        feed::page, feed::stream,
        oauth::token, oauth::revoke, oauth::status_list_token,
        health::healthz, health::readyz, metrics::metrics,
        web::index, web::app_js, web::style_css, web::favicon,
        web::api_reference, web::api_reference_js, web::api_reference_css,
        openapi_json,
    ),
    components(schemas(error::Problem, error::FieldError, auth::Tokens, auth::CookieSession,
        feed::RevocationEntry, feed::Kind)),
    tags(
        (name = "auth", description = "Accounts, login, tokens, logout."),
        (name = "account", description = "What a user controls: their sessions, their \
            password, their account. Under `--sessions token` only."),
        (name = "rooms", description = "Rooms and message history (stateless, any replica)."),
        (name = "chat", description = "Live chat over WebSocket."),
        (name = "discovery", description = "Keys, metadata, the revocation feed and the token \
            status list for third-party verifiers."),
        (name = "oauth", description = "The OAuth 2.0 spellings of refresh and logout, \
            form-encoded, with RFC 6749 errors."),
        (name = "operations", description = "Health, readiness and metrics."),
        (name = "web", description = "The web page and this API's reference page."),
    ),
    modifiers(&CrossCutting),
)]
struct ApiDoc;

/// The description, built once.
pub fn document() -> &'static Document {
    static DOC: LazyLock<Document> = LazyLock::new(ApiDoc::openapi);
    &DOC
}

static JSON: LazyLock<String> = LazyLock::new(|| {
    let mut value = serde_json::to_value(document()).unwrap_or_default();
    fix_link_keys(&mut value);
    serde_json::to_string_pretty(&value).unwrap_or_default()
});

/// The description as served, as JSON.
pub fn document_json() -> serde_json::Value {
    serde_json::from_str(&JSON).unwrap_or_default()
}

/// utoipa 5.5 serializes a Link's `operationId` and `requestBody` in snake case, which
/// no OpenAPI tool reads; renamed here until it does not.
fn fix_link_keys(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Object(links)) = map.get_mut("links") {
                for link in links.values_mut() {
                    if let serde_json::Value::Object(link) = link {
                        for (from, to) in [
                            ("operation_id", "operationId"),
                            ("request_body", "requestBody"),
                        ] {
                            if let Some(v) = link.remove(from) {
                                link.insert(to.to_owned(), v);
                            }
                        }
                    }
                }
            }
            map.values_mut().for_each(fix_link_keys);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(fix_link_keys),
        _ => {}
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi_json))
}

/// This description (OpenAPI 3.1).
#[utoipa::path(get, path = "/openapi.json", tag = "web",
    responses((status = 200, description = "The OpenAPI 3.1 description of this API.",
        content_type = "application/json", body = Object)),
)]
async fn openapi_json() -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        JSON.as_str(),
    )
        .into_response()
}

/// Adds the security schemes, the answers shared by every operation of a kind, the
/// replica header, and the links that chain signup, login, rooms and messages.
struct CrossCutting;

impl Modify for CrossCutting {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT (RFC 9068) under --sessions token, an opaque id otherwise")
                    .description(Some("`Authorization: Bearer <access_token>` from login."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::cookies::ACCESS,
                "The HttpOnly cookie a login with `\"cookies\": true` sets. A write \
                 authenticated by it must come from the page's origin and echo the \
                 `herd_csrf` cookie in `X-CSRF-Token`.",
            ))),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            for (method, op) in operations(item) {
                shared_answers(method, op);
                for answer in op.responses.responses.values_mut() {
                    if let RefOr::T(answer) = answer {
                        answer.headers.insert(
                            crate::REPLICA_HEADER.to_string(),
                            Header::new(Object::with_type(Type::String)),
                        );
                    }
                }
                links(path, method, op);
            }
        }
    }
}

fn operations(item: &mut PathItem) -> Vec<(&'static str, &mut Operation)> {
    [
        ("get", item.get.as_mut()),
        ("put", item.put.as_mut()),
        ("post", item.post.as_mut()),
        ("delete", item.delete.as_mut()),
        ("patch", item.patch.as_mut()),
        ("head", item.head.as_mut()),
        ("options", item.options.as_mut()),
        ("trace", item.trace.as_mut()),
    ]
    .into_iter()
    .filter_map(|(m, op)| Some((m, op?)))
    .collect()
}

fn problem(description: &str) -> Answer {
    let mut answer = Answer::new(description);
    answer.content.insert(
        "application/problem+json".to_owned(),
        Content::new(Some(Ref::from_schema_name("Problem"))),
    );
    answer
}

/// What an operation answers because of the extractors it uses. A status the handler
/// documents itself is kept (its description is the more specific).
fn shared_answers(method: &str, op: &mut Operation) {
    let answers = &mut op.responses.responses;
    let mut add = |status: &str, answer: Answer| {
        answers.entry(status.to_owned()).or_insert(RefOr::T(answer));
    };
    // The OAuth endpoints take forms and answer their own errors (RFC 6749 section 5.2),
    // so the answers of a JSON body do not apply to them.
    let json_body = op.request_body.as_ref().is_some_and(|body| {
        body.content
            .keys()
            .all(|media| media != "application/x-www-form-urlencoded")
    });
    if op.request_body.is_some() {
        add(
            "408",
            problem(
                "`request-timeout`: the body did not arrive within the header-read timeout \
                 (10 s by default).",
            ),
        );
        add(
            "413",
            problem("`payload-too-large`: the body is over the limit (64 KiB by default)."),
        );
    }
    if json_body {
        add(
            "400",
            problem("`malformed-json`: the body is not valid JSON."),
        );
        add(
            "415",
            problem("`unsupported-media-type`: send the body as `application/json`."),
        );
        add(
            "422",
            problem("`validation-failed`: `errors` names every invalid field and what is wrong."),
        );
    }
    let secured = op
        .security
        .as_ref()
        .is_some_and(|requirements| !requirements.is_empty());
    if secured {
        let mut unauthorized =
            problem("`invalid-token`: the credential is missing, malformed, expired or revoked.");
        unauthorized.headers.insert(
            "WWW-Authenticate".to_owned(),
            Header::new(Object::with_type(Type::String)),
        );
        add("401", unauthorized);
        if method != "get" {
            add(
                "403",
                problem(
                    "`csrf-failed`: a cookie-authenticated write without `X-CSRF-Token`, \
                     or from another origin.",
                ),
            );
        }
    }
    if secured || json_body {
        add(
            "503",
            problem("`unavailable`: the store is unavailable; try again shortly."),
        );
    }
}

/// OpenAPI links, so a client (and schemathesis's stateful phase) can follow a signup to
/// its login, and a room to its messages.
fn links(path: &str, method: &str, op: &mut Operation) {
    let mut link = |status: &str, name: &str, operation: &str, build: &dyn Fn(&mut Link)| {
        if let Some(RefOr::T(answer)) = op.responses.responses.get_mut(status) {
            let mut l = Link::builder().operation_id(operation).build();
            build(&mut l);
            answer.links.insert(name.to_owned(), RefOr::T(l));
        }
    };
    let room_id = |from: &'static str| {
        move |l: &mut Link| {
            l.parameters
                .insert("id".to_owned(), serde_json::Value::from(from));
        }
    };
    match (method, path) {
        ("post", "/v1/auth/signup") => link("201", "LogIn", "login", &|l| {
            l.request_body = Some(serde_json::json!({
                "username": "$request.body#/username",
                "password": "$request.body#/password",
            }));
        }),
        ("post", "/v1/rooms") => {
            link("201", "Join", "join", &room_id("$response.body#/id"));
            link("201", "Leave", "leave", &room_id("$response.body#/id"));
            link("201", "Send", "send", &room_id("$response.body#/id"));
            link("201", "History", "history", &room_id("$response.body#/id"));
        }
        ("post", "/v1/rooms/{id}/messages") => {
            link(
                "201",
                "History",
                "history",
                &room_id("$response.body#/room"),
            );
        }
        _ => {}
    }
}
