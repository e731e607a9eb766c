//! The lock file reader on arbitrary bytes: never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

thread_local! {
    static DIR: tempfile::TempDir = tempfile::tempdir().unwrap();
}

fuzz_target!(|data: &[u8]| {
    DIR.with(|dir| {
        let path = dir.path().join("fuzz.lock");
        std::fs::write(&path, data).unwrap();
        let _ = talix::lockfile::LockFile::load(&path);
    });
});
