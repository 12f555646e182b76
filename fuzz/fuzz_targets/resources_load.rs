//! Resource YAML loader: any text yields resources and/or errors (each naming file, line and
//! field), never a panic; whatever loads also validates without panicking. The seeds include
//! the hostile shapes of issue 16 (deep nesting, alias amplification, names, durations).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let loaded = skycanary::resources::load_str("fuzz.yaml", text);
    for e in &loaded.errors {
        assert!(!e.to_string().is_empty(), "an error must say something");
    }
    // The manifests' flavour of the same entry point expands aliases, within the same bounds.
    use skycanary::resources::yaml::{MANIFEST_LIMITS, parse_documents_with};
    if let Err(e) = parse_documents_with(text, &MANIFEST_LIMITS) {
        assert!(e.line >= 1, "an error must name a line: {e}");
    }
});
