//! Whole TokenReview bodies through the reviewer: decode, route, verify,
//! map claims, encode. Must never panic.
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let f = common::fixture();
    let _ = f.runtime.block_on(f.reviewer.review_body(data));
});
