//! A hand-built, almost deterministic simulator for unit tests (the real weights live in ../shared
//! and are only used by the integration tests).
//!
//! * Generator: every attribute is its first category (logit 50 vs 0), except group 6 (dims 60,
//!   61), which is a fair coin.
//! * Leave: a user with dim 60 set leaves after 2 pages, one with dim 61 after 5 pages.
//! * Click model: 3 clicks and `b = 1`, unless the first action component `a0` exceeds 1.5: then
//!   7 clicks (`logit7 = 100·a0 − 100` against `logit3 = 50`). So clipping decides the clicks for
//!   `a0 = 3`.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

/// Layer shapes `(name, [out, in])` of the three networks.
pub(crate) const LAYERS: [(&str, usize, usize); 8] = [
    ("user_generator.0", 128, 128),
    ("user_generator.2", 88, 128),
    ("leave.0", 128, 88),
    ("leave.2", 256, 128),
    ("leave.4", 101, 256),
    ("action.0", 128, 116),
    ("action.2", 256, 128),
    ("action.4", 21, 256),
];

/// Leave counts of the two kinds of synthetic user.
pub(crate) const LEAVE_IF_60: u32 = 2;
pub(crate) const LEAVE_IF_61: u32 = 5;

/// The synthetic networks' tensors, keyed as in `virtualtb_v0.safetensors`.
pub(crate) fn synthetic_tensors() -> HashMap<String, Tensor> {
    let mut w: HashMap<&str, Vec<f32>> = HashMap::new();
    let mut b: HashMap<&str, Vec<f32>> = HashMap::new();
    for (name, out, inp) in LAYERS {
        w.insert(name, vec![0.0; out * inp]);
        b.insert(name, vec![0.0; out]);
    }
    let set = |m: &mut HashMap<&str, Vec<f32>>, name: &str, i: usize, v: f32| {
        if let Some(x) = m.get_mut(name).and_then(|x| x.get_mut(i)) {
            *x = v;
        }
    };
    // Generator: first category of every group, a coin for group 6 (offset 60).
    let mut off = 0;
    for (g, size) in crate::USER_GROUPS.iter().enumerate() {
        if g != 6 {
            set(&mut b, "user_generator.2", off, 50.0);
        }
        off += size;
    }
    // Leave: dim 60 → hidden 0 → hidden 0 → logit 2; dim 61 → hidden 1 → hidden 1 → logit 5.
    set(&mut w, "leave.0", 60, 1.0);
    set(&mut w, "leave.0", 88 + 61, 1.0);
    set(&mut w, "leave.2", 0, 1.0);
    set(&mut w, "leave.2", 128 + 1, 1.0);
    set(&mut w, "leave.4", LEAVE_IF_60 as usize * 256, 100.0);
    set(&mut w, "leave.4", LEAVE_IF_61 as usize * 256 + 1, 100.0);
    // Clicks: input 89 is the first action component.
    set(&mut w, "action.0", 89, 1.0);
    set(&mut w, "action.2", 0, 1.0);
    set(&mut b, "action.4", 3, 50.0);
    set(&mut w, "action.4", 7 * 256, 100.0);
    set(&mut b, "action.4", 7, -100.0);
    set(&mut b, "action.4", 11 + 1, 50.0);

    let mut out = HashMap::new();
    for (name, o, i) in LAYERS {
        let wt = Tensor::from_vec(w[name].clone(), (o, i), &Device::Cpu).expect("weight");
        let bt = Tensor::from_vec(b[name].clone(), o, &Device::Cpu).expect("bias");
        out.insert(format!("{name}.weight"), wt);
        out.insert(format!("{name}.bias"), bt);
    }
    out
}

/// Writes `tensors` to `dir/name` as safetensors and returns the path.
pub(crate) fn write(
    dir: &std::path::Path,
    name: &str,
    tensors: &HashMap<String, Tensor>,
) -> std::path::PathBuf {
    let p = dir.join(name);
    candle_core::safetensors::save(tensors, &p).expect("write safetensors");
    p
}
