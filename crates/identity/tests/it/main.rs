//! herd-identity's integration tests, one binary so they link once.

mod wycheproof;
