//! For tests of this crate and of its users: a tiny backbone and a small synthetic dataset with a
//! learnable signal. Not part of the stable API.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use mtrec_data::interactions::RowsBuilder;
use mtrec_data::{prepare, PrepareConfig, PreparedDataset};
use mtrec_nn::{
    masked_mean, Activation, Backbone, Batch, Embedding, EmbeddingConfig, EmbeddingInit, Features,
    Mlp, MlpConfig, Vocab,
};

/// Embeddings of item and category, masked-mean history pooling, one ReLU layer over
/// `[target; history; target ⊙ history]`.
pub struct TinyBackbone {
    items: Embedding,
    cats: Embedding,
    mlp: Mlp,
    dim: usize,
}

impl TinyBackbone {
    pub const NAME: &'static str = "tiny";
    /// Dropout on the MLP input in training.
    pub const DROPOUT: f32 = 0.1;

    pub fn new(vocab: Vocab, dim: usize, vb: VarBuilder) -> Result<Self> {
        let cfg = EmbeddingConfig {
            init: EmbeddingInit::Normal { std: 0.1 },
            ..EmbeddingConfig::default()
        };
        Ok(TinyBackbone {
            items: Embedding::new(vocab.items, dim, cfg, vb.pp("item_emb"))?,
            cats: Embedding::new(vocab.categories, dim, cfg, vb.pp("cat_emb"))?,
            mlp: Mlp::new(
                &MlpConfig::new(6 * dim, &[2 * dim], Activation::Relu),
                vb.pp("mlp"),
            )?,
            dim,
        })
    }

    fn embed(&self, items: &Tensor, cats: &Tensor) -> Result<Tensor> {
        Tensor::cat(
            &[self.items.forward(items)?, self.cats.forward(cats)?],
            candle_core::D::Minus1,
        )
    }
}

impl Backbone for TinyBackbone {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn feature_dim(&self) -> usize {
        2 * self.dim
    }

    fn forward(&self, batch: &Batch, train: bool) -> Result<Features> {
        let target = self.embed(&batch.target_items, &batch.target_cats)?;
        let hist = masked_mean(
            &self.embed(&batch.hist_items, &batch.hist_cats)?,
            &batch.mask,
        )?;
        let x = Tensor::cat(&[&target, &hist, &(&target * &hist)?], 1)?;
        // Light dropout, so that the determinism and resume tests cover the seeded masks.
        let x = mtrec_nn::dropout::dropout(&x, Self::DROPOUT, train)?;
        Ok(Features::plain(self.mlp.forward(&x)?))
    }
}

/// A builder closure for [`crate::Trainer`] and [`crate::train_run`].
pub fn tiny_builder(
    dim: usize,
) -> impl Fn(Vocab, VarBuilder<'static>) -> Result<Box<dyn Backbone>> {
    move |vocab, vb| Ok(Box::new(TinyBackbone::new(vocab, dim, vb)?) as Box<dyn Backbone>)
}

/// `users` users with 4..=9 steps each over 48 items in 6 categories. User `u` engages mostly
/// with items of category `u mod 6`, so "same category as the history" is a learnable signal
/// against the uniform negatives. 10% test users.
pub fn tiny_dataset(users: u32) -> PreparedDataset {
    let mut rows = RowsBuilder::default();
    for u in 0..users {
        let n = 4 + (u as usize * 5) % 6;
        let fav = (u % 6) as usize;
        for t in 0..n {
            // 7 in 8 steps in the favourite category.
            let cat = if (u as usize + t) % 8 == 0 {
                (fav + 1 + t) % 6
            } else {
                fav
            };
            let item = cat * 8 + (u as usize * 3 + t * 5) % 8;
            rows.push(
                &format!("u{u:04}"),
                &format!("i{item:03}"),
                &format!("c{cat}"),
                t as i64,
                0,
                u as u64 * 100 + t as u64 + 1,
            );
        }
    }
    let table = rows
        .finish(vec!["memory".into()], "test")
        .expect("a valid table");
    prepare(&table, &PrepareConfig::default(), vec![]).expect("a valid dataset")
}
