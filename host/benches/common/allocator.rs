//! The `modelyard` binary's allocator (see `src/main.rs`), for the benches that time the
//! binary's own work in-process, so they measure what the binary does.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
