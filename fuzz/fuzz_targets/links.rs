//! The `talosctl get links -o json` stream parser on arbitrary text: never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = talix::discovery::parse_physical_links(text);
    }
});
