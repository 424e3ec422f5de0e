//! Where a program's work runs: on a worker of a rayon pool (decision 0025).

/// Runs `f` on a worker thread of a rayon pool of its own and returns its result; runs it in
/// place when called on a worker already.
///
/// Every kernel that splits its work (matrix products, element-wise passes, training shards, the
/// optimizer) is then started from a worker. Started from another thread (a program's main
/// thread), each such call hands its job to the pool and sleeps on a lock until the job is done:
/// two context switches per call, hundreds of calls per training step, a quarter of a small
/// model's training time on two cores. `train_run`, `sample` and `evaluate_run` run through
/// this; programs that drive lower-level functions (`train_autoencoder`, `generate_latents`)
/// from their own threads should wrap that work in it.
///
/// The pool is built for the call (as many threads as rayon's global pool would have, so
/// `RAYON_NUM_THREADS` applies; 8 MiB stacks, a main thread's) and ends with it. A pool per call,
/// not the global one: a worker waiting inside one call's kernels may run queued jobs of its
/// pool, and whole calls from other threads (parallel tests, a server) must not run nested in
/// the middle of another's training step, whose thread-local state (collected weight products)
/// they would see. Results never depend on it: kernels split their work by shape, not by thread.
pub fn on_worker_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    match rayon::ThreadPoolBuilder::new().stack_size(8 << 20).build() {
        Ok(pool) => pool.install(f),
        // Threads could not be started: run where we are, as before (slower, same results).
        Err(_) => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The work runs on a pool worker, called from outside a pool and from inside one, with the
    /// global pool's thread count.
    #[test]
    fn runs_on_a_worker() {
        assert!(rayon::current_thread_index().is_none());
        let expected = rayon::current_num_threads();
        let (index, threads) = on_worker_thread(|| {
            let outer = rayon::current_thread_index();
            let inner = on_worker_thread(rayon::current_thread_index);
            assert_eq!(inner, outer);
            (outer, rayon::current_num_threads())
        });
        assert!(index.is_some());
        assert_eq!(threads, expected);
    }
}
