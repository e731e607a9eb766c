//! The profile reader and validator on arbitrary bytes: never panics, and every refusal names
//! the file.
#![no_main]

use libfuzzer_sys::fuzz_target;

thread_local! {
    static DIR: tempfile::TempDir = tempfile::tempdir().unwrap();
}

fuzz_target!(|data: &[u8]| {
    DIR.with(|dir| {
        let path = dir.path().join("profiles").join("fuzz.yaml");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, data).unwrap();
        if let Err(e) = talix::profile::load(&path) {
            assert!(!e.errors.is_empty());
            for f in &e.errors {
                assert_eq!(f.file, path);
            }
        }
    });
});
