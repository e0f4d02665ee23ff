//! Fuzzes the whole front end: any text goes through the lexer, the parser (with recovery)
//! and the checker. Nothing may panic; every diagnostic's span lies within the source; a
//! source without errors compiles, and its tests run.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let checked = rules_dsl::check(source, &rules_dsl::Offline, false);
    for d in &checked.diagnostics {
        assert!(
            d.span.start <= d.span.end && d.span.end <= source.len(),
            "{d:?}"
        );
        assert!(d.line >= 1 && d.column >= 1);
    }
    assert_eq!(checked.program.is_some(), !checked.has_errors());
    if let Some(program) = &checked.program {
        let _ = rules_dsl::testing::run(program, None);
    }
});
