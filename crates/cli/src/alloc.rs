//! Process-wide allocator settings.
//!
//! A training step allocates and frees the same large activation buffers every step (the logits
//! alone are `n_tok × n_vocab` floats). glibc serves allocations above its mmap threshold with fresh
//! pages, so every step would page-fault and zero hundreds of MB again (≈ 10% of a step in perf).
//! Fixing the mmap threshold at its maximum (32 MiB) and raising the trim threshold keeps those
//! buffers in the heap for reuse; the LM head works in row chunks so that its buffers stay below it.

/// Apply the settings (no-op where glibc is not the allocator).
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called once at start-up before threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20); // glibc's maximum
        libc::mallopt(libc::M_TRIM_THRESHOLD, 4 << 30);
    }
}
