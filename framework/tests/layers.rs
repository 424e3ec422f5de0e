//! Layer gradients against central finite differences, a small MLP learning a known nonlinear
//! regression, attention reference numbers, and shape/serialization properties.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dfdx::prelude::*;
use latentlab_framework::device::{device, tensor1, tensor2, Dev, Scalar, Tensor2, TrainTape};
use latentlab_framework::nn::{
    Activation, Embedding, Init, LayerNorm, Linear, Mlp, Modulation, MultiHeadAttention, ParamMut,
    Parameters, ResidualBlock,
};
use latentlab_framework::optim::{AdamW, AdamWConfig, NamedGradients};
use latentlab_framework::rng::stream;
use proptest::prelude::*;
use rand::Rng;

/// Checks every parameter gradient of `model` (first `per_param` entries of each) against
/// central differences of `loss`. f32 arithmetic: step 3e-3 (1e-2 already shows truncation error
/// through LayerNorm + GELU), tolerance 2e-2 relative + 2e-3 absolute.
fn check_gradients<M: Parameters>(
    model: &mut M,
    loss: impl Fn(&M) -> Scalar<TrainTape>,
    per_param: usize,
) {
    let (_, grads) = NamedGradients::backward(loss(model), model, "m").unwrap();
    let names = model.param_names("m");
    assert!(!names.is_empty());
    for name in names {
        let analytic = grads.by_name[&name].as_vec();
        let mut values = Vec::new();
        model.visit("m", &mut |n, p| {
            if n == name {
                values = p.to_vec();
            }
        });
        for i in 0..values.len().min(per_param) {
            let h = 3e-3f32;
            let eval = |model: &mut M, v: f32| {
                let mut vals = values.clone();
                vals[i] = v;
                set(model, &name, &vals);
                loss(model).array() as f64
            };
            let plus = eval(model, values[i] + h);
            let minus = eval(model, values[i] - h);
            set(model, &name, &values);
            let numeric = (plus - minus) / (2.0 * h as f64);
            let a = analytic[i] as f64;
            assert!(
                (a - numeric).abs() <= 2e-2 * numeric.abs().max(a.abs()) + 2e-3,
                "{name}[{i}]: analytic {a} vs numeric {numeric}"
            );
        }
    }
}

fn set<M: Parameters>(model: &mut M, name: &str, values: &[f32]) {
    model.visit_mut("m", &mut |n, mut p: ParamMut<'_>| {
        if n == name {
            p.set(values).unwrap();
        }
    });
}

fn input(dev: &Dev, rows: usize, cols: usize, seed: u64) -> Tensor2 {
    let mut rng = stream(seed, "input");
    let v: Vec<f32> = (0..rows * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
    tensor2(dev, &v, rows, cols).unwrap()
}

/// A fixed random projection to a scalar so every output element gets a distinct weight.
fn project(y: Tensor2<TrainTape>, seed: u64) -> Scalar<TrainTape> {
    let (r, c) = *y.shape();
    let w = input(y.device(), r, c, seed);
    (y * w).sum()
}

#[test]
fn linear_gradients() {
    let dev = device(0).unwrap();
    let mut layer = Linear::new(&dev, 4, 3, Init::XavierUniform, &mut stream(0, "l")).unwrap();
    let x = input(&dev, 5, 4, 1);
    check_gradients(
        &mut layer,
        |l| project(l.forward(x.retaped::<TrainTape>()).unwrap().square(), 2),
        12,
    );
}

#[test]
fn layer_norm_gradients() {
    let dev = device(0).unwrap();
    let mut ln = LayerNorm::new(&dev, 6);
    ln.gamma = tensor1(&dev, &[1.0, 0.5, -0.3, 2.0, 1.1, 0.9]);
    let x = input(&dev, 4, 6, 3);
    check_gradients(
        &mut ln,
        |l| project(l.forward(x.retaped::<TrainTape>()).unwrap(), 4),
        6,
    );
}

#[test]
fn activation_and_mlp_gradients() {
    let dev = device(0).unwrap();
    for act in [Activation::Silu, Activation::Gelu, Activation::Relu] {
        let mut mlp = Mlp::new(&dev, 3, &[5, 4], act, true, 0.0, &mut stream(1, "mlp")).unwrap();
        let x = input(&dev, 6, 3, 5);
        check_gradients(
            &mut mlp,
            |m| project(m.forward(x.retaped::<TrainTape>(), true).unwrap(), 6),
            8,
        );
    }
}

#[test]
fn embedding_gradients() {
    let dev = device(0).unwrap();
    let mut e = Embedding::new(&dev, 4, 3, &mut stream(2, "e")).unwrap();
    check_gradients(
        &mut e,
        |e| project(e.forward::<TrainTape>(&[0, 2, 2, 3]).unwrap().square(), 7),
        12,
    );
}

#[test]
fn residual_block_gradients_with_modulation() {
    let dev = device(0).unwrap();
    struct Modulated {
        block: ResidualBlock,
        scale: Linear,
    }
    latentlab_framework::parameters!(Modulated { block, scale });
    let mut rng = stream(3, "rb");
    let mut m = Modulated {
        block: ResidualBlock::new(&dev, 4, 8, Activation::Silu, true, 0.0, &mut rng).unwrap(),
        scale: Linear::new(&dev, 2, 4, Init::XavierUniform, &mut rng).unwrap(),
    };
    let x = input(&dev, 3, 4, 8);
    let c = input(&dev, 3, 2, 9);
    check_gradients(
        &mut m,
        |m| {
            let (c1, c2) =
                latentlab_framework::nn::fork(m.scale.forward(c.retaped::<TrainTape>()).unwrap());
            let modulation = Modulation {
                scale: c1,
                shift: c2,
                gate: None,
            };
            project(
                m.block
                    .forward(x.retaped::<TrainTape>(), Some(modulation), true)
                    .unwrap(),
                10,
            )
        },
        8,
    );
}

#[test]
fn attention_gradients() {
    let dev = device(0).unwrap();
    let mut att = MultiHeadAttention::new(&dev, 4, 3, 2, &mut stream(4, "att")).unwrap();
    let x = input(&dev, 2 * 3, 4, 11);
    let ctx = input(&dev, 2 * 5, 3, 12);
    check_gradients(
        &mut att,
        |a| {
            project(
                a.forward(x.retaped::<TrainTape>(), ctx.retaped::<TrainTape>(), 2)
                    .unwrap(),
                13,
            )
        },
        6,
    );
}

/// Single-head attention by hand: q = x Wq, k = c Wk, v = c Wv, softmax(q kᵀ / √d) v Wo.
#[test]
fn attention_reference_numbers() {
    let dev = device(0).unwrap();
    let mut att = MultiHeadAttention::new(&dev, 2, 2, 1, &mut stream(0, "a")).unwrap();
    let eye = tensor2(&dev, &[1.0, 0.0, 0.0, 1.0], 2, 2).unwrap();
    for l in att
        .query
        .iter_mut()
        .chain(att.key.iter_mut())
        .chain(att.value.iter_mut())
        .chain(att.output.iter_mut())
    {
        l.weight = eye.clone();
        l.bias = tensor1(&dev, &[0.0, 0.0]);
    }
    let x = tensor2(&dev, &[1.0, 0.0], 1, 2).unwrap();
    let c = tensor2(&dev, &[1.0, 0.0, 0.0, 1.0], 2, 2).unwrap();
    let y = att.forward(x, c, 1).unwrap().as_vec();
    // scores = [1, 0] / √2; weights = softmax -> [e^{0.7071}, 1] / (e^{0.7071} + 1)
    let a = (0.5f32).sqrt().exp();
    let expect = [a / (a + 1.0), 1.0 / (a + 1.0)];
    assert!(
        (y[0] - expect[0]).abs() < 1e-6 && (y[1] - expect[1]).abs() < 1e-6,
        "{y:?}"
    );
}

/// A 2-layer MLP + linear head fits y = sin(3x₁) + x₂² on 256 points to MSE < 0.01 (the target's
/// variance is ≈ 0.58) within 1500 AdamW steps.
#[test]
fn mlp_learns_a_nonlinear_regression() {
    let dev = device(0).unwrap();
    struct Net {
        body: Mlp,
        head: Linear,
    }
    latentlab_framework::parameters!(Net { body, head });
    let mut rng = stream(5, "reg");
    let mut net = Net {
        body: Mlp::new(&dev, 2, &[64, 64], Activation::Silu, false, 0.0, &mut rng).unwrap(),
        head: Linear::new(&dev, 64, 1, Init::KaimingUniform, &mut rng).unwrap(),
    };
    let n = 256;
    let xs: Vec<f32> = (0..n * 2).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let ys: Vec<f32> = xs
        .chunks(2)
        .map(|p| (3.0 * p[0]).sin() + p[1] * p[1])
        .collect();
    let x = tensor2(&dev, &xs, n, 2).unwrap();
    let y = tensor2(&dev, &ys, n, 1).unwrap();
    let mut opt = AdamW::new(AdamWConfig {
        weight_decay: 0.0,
        ..Default::default()
    })
    .unwrap();
    let mut last = f32::INFINITY;
    for _ in 0..1500 {
        let pred = net
            .head
            .forward(net.body.forward(x.retaped::<TrainTape>(), true).unwrap())
            .unwrap();
        let loss = (pred - y.clone()).square().mean();
        let (value, grads) = NamedGradients::backward(loss, &net, "").unwrap();
        opt.apply(&mut net, "", &grads, 3e-3).unwrap();
        last = value;
    }
    assert!(last < 0.01, "final MSE {last}");
}

#[test]
fn corrupted_and_truncated_checkpoints_are_clear_errors() {
    let dev = device(0).unwrap();
    let layer = Linear::new(&dev, 3, 2, Init::XavierUniform, &mut stream(0, "c")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let tensors = latentlab_framework::checkpoint::collect(&[("layer", &layer as &dyn Parameters)]);
    latentlab_framework::checkpoint::save(&path, &tensors, Default::default()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = latentlab_framework::checkpoint::load(&path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("w.safetensors") && err.contains("truncated"),
        "{err}"
    );
    std::fs::write(&path, b"not a checkpoint at all").unwrap();
    assert!(latentlab_framework::checkpoint::load(&path).is_err());
    // Mis-shaped restore names the tensor.
    let mut other = Linear::new(&dev, 4, 2, Init::XavierUniform, &mut stream(0, "d")).unwrap();
    let err = latentlab_framework::checkpoint::restore(&tensors, &mut other, "layer", &path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("layer.weight"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("regressions"))), ..ProptestConfig::default() })]

    #[test]
    fn layer_shapes_follow_config(batch in 1usize..9, inputs in 1usize..17, hidden in 1usize..17, outputs in 1usize..9) {
        let dev = device(0).unwrap();
        let mut rng = stream(batch as u64, "shape");
        let mlp = Mlp::new(&dev, inputs, &[hidden], Activation::Silu, true, 0.0, &mut rng).unwrap();
        let head = Linear::new(&dev, hidden, outputs, Init::KaimingUniform, &mut rng).unwrap();
        let x: Tensor2 = dev.zeros_like(&(batch, inputs));
        let y = head.forward(mlp.forward(x, false).unwrap()).unwrap();
        prop_assert_eq!(*y.shape(), (batch, outputs));
        let wrong: Tensor2 = dev.zeros_like(&(batch, inputs + 1));
        prop_assert!(mlp.forward(wrong, false).is_err());
    }

    #[test]
    fn save_load_identity(inputs in 1usize..9, outputs in 1usize..9, seed in 0u64..1000) {
        let dev = device(0).unwrap();
        let a = Linear::new(&dev, inputs, outputs, Init::XavierUniform, &mut stream(seed, "a")).unwrap();
        let mut b = Linear::new(&dev, inputs, outputs, Init::XavierUniform, &mut stream(seed + 1, "b")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        latentlab_framework::checkpoint::save(&path, &latentlab_framework::checkpoint::collect(&[("l", &a as &dyn Parameters)]), Default::default()).unwrap();
        latentlab_framework::checkpoint::restore(&latentlab_framework::checkpoint::load(&path).unwrap(), &mut b, "l", &path).unwrap();
        prop_assert_eq!(a.weight.as_vec(), b.weight.as_vec());
        prop_assert_eq!(a.bias.as_vec(), b.bias.as_vec());
    }
}

/// KL(N(μ, e^{log σ²}) ‖ N(0, I)) and the reparameterized sample z = μ + e^{log σ²/2} ε (fixed ε):
/// analytic gradients against central differences, and the KL value against the closed form.
#[test]
fn kl_and_reparameterization_gradients() {
    let dev = device(0).unwrap();
    struct Posterior {
        mu: Tensor2,
        log_var: Tensor2,
    }
    latentlab_framework::parameters!(Posterior { mu, log_var });
    let mut p = Posterior {
        mu: input(&dev, 3, 4, 21),
        log_var: input(&dev, 3, 4, 22),
    };
    let kl = |p: &Posterior| {
        latentlab_framework::likelihood::kl_standard_normal(
            p.mu.retaped::<TrainTape>(),
            p.log_var.retaped::<TrainTape>(),
        )
    };
    let (m, lv) = (p.mu.as_vec(), p.log_var.as_vec());
    let expect: f32 = m
        .iter()
        .zip(&lv)
        .map(|(m, l)| -0.5 * (1.0 + l - m * m - l.exp()))
        .sum::<f32>()
        / 3.0;
    assert!((kl(&p).array() - expect).abs() < 1e-5);
    check_gradients(&mut p, kl, 12);
    let eps = input(&dev, 3, 4, 23);
    check_gradients(
        &mut p,
        |p| {
            let z = p.mu.retaped::<TrainTape>()
                + (p.log_var.retaped::<TrainTape>() * 0.5).exp() * eps.clone();
            project(z.square(), 24)
        },
        12,
    );
}
