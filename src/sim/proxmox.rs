//! Simulated Proxmox VE API (owned by the nodes helper; stub for now).
