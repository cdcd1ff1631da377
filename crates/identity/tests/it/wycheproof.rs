//! herd's Ed25519 check against Project Wycheproof's vectors: every `valid` signature
//! accepted, every `invalid` one refused (non-canonical `s`, small-order keys and `R`,
//! truncated or padded signatures, bit flips).

use ed25519_dalek::VerifyingKey;
use herd_identity::jwt::verify_signature;
use herd_identity::Rejection;
use wycheproof::eddsa::{TestName, TestSet};
use wycheproof::TestResult;

/// What herd does with a public key and a signature: a key that does not decode to a
/// curve point can never be in the ring, so it counts as refused.
fn herd_accepts(public: &[u8], message: &[u8], signature: &[u8]) -> Result<(), Rejection> {
    let public: [u8; 32] = public.try_into().map_err(|_| Rejection::UnknownKey)?;
    let key = VerifyingKey::from_bytes(&public).map_err(|_| Rejection::UnknownKey)?;
    verify_signature(&key, message, signature)
}

#[test]
fn every_wycheproof_ed25519_vector_gets_its_expected_verdict() {
    let set = TestSet::load(TestName::Ed25519).expect("the Ed25519 vectors load");
    let mut wrong = Vec::new();
    let (mut valid, mut invalid, mut ran) = (0, 0, 0);
    for group in &set.test_groups {
        for test in &group.tests {
            ran += 1;
            let verdict = herd_accepts(&group.key.pk, &test.msg, &test.sig);
            let right = match test.result {
                TestResult::Valid => {
                    valid += 1;
                    verdict.is_ok()
                }
                TestResult::Invalid => {
                    invalid += 1;
                    verdict.is_err()
                }
                // Ed25519 has no "acceptable" vectors today; if one appears, either
                // verdict is allowed by definition.
                TestResult::Acceptable => true,
            };
            if !right {
                wrong.push(format!(
                    "tcId {} ({:?}, {:?}): {} got {verdict:?}",
                    test.tc_id, test.result, test.flags, test.comment
                ));
            }
        }
    }
    assert_eq!(ran, set.number_of_tests, "every vector ran");
    assert!(
        valid > 0 && invalid > 0,
        "both kinds were present: {valid} valid, {invalid} invalid"
    );
    assert!(
        wrong.is_empty(),
        "{} wrong verdicts:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// Wycheproof's Ed25519 set has no small-order public keys, which is what `verify_strict`
/// guards against beyond plain `verify`: with the identity point as key and as `R` and
/// `s = 0`, the cofactorless equation holds for every message, so plain `verify`
/// accepts this signature on anything.
#[test]
fn a_small_order_key_does_not_verify_a_signature_on_every_message() {
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut signature = [0u8; 64];
    signature[..32].copy_from_slice(&identity);
    for message in [&b"alice"[..], b"bob", b""] {
        assert_eq!(
            herd_accepts(&identity, message, &signature),
            Err(Rejection::BadSignature),
            "{message:?}"
        );
    }
}
