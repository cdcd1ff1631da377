//! herd-verify's integration tests: the verifier against a stand-in for herd.

mod feed;
