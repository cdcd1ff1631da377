//! herd-server's integration tests: real HTTP against replicas on port 0, each with its
//! own SQLite file and a clock the test moves.

mod account;
mod auth;
mod chat;
mod chat_attacks;
mod confirm;
mod cookies;
mod edge;
mod errors;
mod feed;
mod helpers;
mod keys;
mod lockout;
mod login_throttle;
mod openapi;
mod ops;
mod origin;
mod passwords;
mod protocol;
mod replicas;
mod rooms;
mod schemathesis;
mod security;
mod standard;
mod strategies;
mod tokens;
mod web;
mod ws;
