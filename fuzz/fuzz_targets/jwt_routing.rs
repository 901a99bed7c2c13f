//! Bearer tokens through the path the service runs after decoding a
//! TokenReview: splitting, header and claims decoding, routing by iss, claim
//! checks, signature verification, the cache, audiences and the encoded
//! answer. Must never panic.
#![no_main]

mod common;

use kube_authn_webhook::wire::ApiVersion;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let f = common::fixture();
    let audiences = ["kubernetes".to_owned(), String::new()];
    let _ = f.runtime.block_on(f.reviewer.review_token(
        ApiVersion::V1,
        token,
        &audiences,
        std::time::Instant::now(),
    ));
});
