//! CEL as AuthenticationConfiguration expressions use it: compiling (the
//! parser, the type checker, the cost instrumentation) and evaluating on
//! claims. The first line is the expression, the rest the claims JSON. Must
//! never panic and always return (the cost bound).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (expression, claims) = text.split_once('\n').unwrap_or((text, "{}"));
    kube_authn_webhook::cel::fuzz_compile_and_eval(expression, claims.as_bytes());
});
