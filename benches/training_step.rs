//! Training-step and sampling throughput at the reference shapes (DESIGN.md §8), printed as the
//! same JSON as `bench_torch.py` so the two can be compared line by line:
//! `cargo bench --bench training_step` (set `LATENTLAB_BENCH_CASES=vae_step,latent_denoiser_step`
//! to choose cases).

fn main() {
    latentlab::plugins::link();
    let cases: Vec<String> = std::env::var("LATENTLAB_BENCH_CASES")
        .unwrap_or_else(|_| {
            "vae_step,latent_denoiser_step,gene_denoiser_step,latent_sampling".into()
        })
        .split(',')
        .map(str::to_string)
        .collect();
    let shapes = latentlab::bench::BenchShapes::default();
    match latentlab::bench::run(&shapes, &[1, 2], &cases) {
        Ok(rates) => println!("{}", serde_json::json!({ "rates": rates })),
        Err(e) => {
            eprintln!("bench failed: {e}");
            std::process::exit(1);
        }
    }
}
