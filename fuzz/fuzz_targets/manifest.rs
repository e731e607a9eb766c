//! The store manifest reader (JSON) on arbitrary bytes: never panics; what parses re-encodes to
//! something that parses to the same manifest.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = serde_json::from_slice::<talix::store::Manifest>(data) {
        let _ = m.output_hashes();
        let again = serde_json::to_vec(&m).unwrap();
        let back: talix::store::Manifest = serde_json::from_slice(&again).unwrap();
        assert_eq!(back, m);
    }
});
