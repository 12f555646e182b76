//! Resource YAML loader: any text yields resources and/or errors (each naming file, line and
//! field), never a panic; whatever loads also validates without panicking.
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
});
