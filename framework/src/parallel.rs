//! Where a program's work runs: on a worker of rayon's global pool (decision 0025).

/// Runs `f` on a worker thread of rayon's global pool and returns its result; runs it in place
/// when called on a worker already.
///
/// Every kernel that splits its work (matrix products, element-wise passes, training shards, the
/// optimizer) is then started from a worker. Started from another thread (a program's main
/// thread), each such call hands its job to the pool and sleeps on a lock until the job is done:
/// two context switches per call, hundreds of calls per training step, a quarter of a small
/// model's training time on two cores. Programs that train or sample should wrap their work in
/// this, as the `latentlab` command line does.
///
/// The first call builds the global pool with 8 MiB stacks (a main thread's; its size follows
/// `RAYON_NUM_THREADS` as usual) unless the program built it before. Results never depend on it:
/// kernels split their work by shape, not by the calling thread.
pub fn on_worker_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    // An error means the pool exists already (built by the program or an earlier call): use it.
    let _ = rayon::ThreadPoolBuilder::new()
        .stack_size(8 << 20)
        .build_global();
    rayon::scope(|_| f())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The work runs on a pool worker, called from outside the pool and from inside it.
    #[test]
    fn runs_on_a_worker() {
        assert!(rayon::current_thread_index().is_none());
        let index = on_worker_thread(|| {
            let outer = rayon::current_thread_index();
            let inner = on_worker_thread(rayon::current_thread_index);
            assert_eq!(inner, outer);
            outer
        });
        assert!(index.is_some());
    }
}
