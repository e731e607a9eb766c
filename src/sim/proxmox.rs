//! Simulated Proxmox VE API (owned by the nodes helper; stub for now).

/// `talix sim proxmox --spec FILE --ready-file PATH` (not implemented yet).
pub fn serve_main(_args: Vec<std::ffi::OsString>) -> i32 {
    eprintln!("talix sim proxmox: not implemented yet");
    1
}
