//! The chat crate's integration tests, one binary: the service over a SQLite store on a
//! temporary file and the in-process bus, as one replica runs it.

mod batch;
mod follow;
mod harness;
mod rooms;
