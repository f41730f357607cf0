//! `experiments/table1.yaml`: what the grid holds and the budgets of each profile.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The three rows of each backbone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// `L_CE` only.
    Plain,
    /// `L_CE + κ·L_Align` with IQ-Learn rewards (the paper's "-IRL").
    Irl,
    /// `L_CE + κ·L_Align` with QR-IQL rewards (the paper's "-MTRec").
    Mtrec,
}

impl Variant {
    pub const ALL: [Variant; 3] = [Variant::Plain, Variant::Irl, Variant::Mtrec];

    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::Irl => "irl",
            Variant::Mtrec => "mtrec",
        }
    }

    /// The reward model the variant aligns with.
    pub fn reward_kind(self) -> Option<mtrec_reward::RewardKind> {
        match self {
            Variant::Plain => None,
            Variant::Irl => Some(mtrec_reward::RewardKind::IqLearn),
            Variant::Mtrec => Some(mtrec_reward::RewardKind::QrIql),
        }
    }

    /// The paper's row suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Variant::Plain => "",
            Variant::Irl => "-IRL",
            Variant::Mtrec => "-MTRec",
        }
    }

    pub fn parse(s: &str) -> Option<Variant> {
        Variant::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
    }
}

/// One dataset (a column group of the table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    /// Column title; `Electronics` and `Books` get the paper's values beside ours.
    pub name: String,
    /// `electronics` or `books`: the real 5-core files in the data cache, when they are there.
    #[serde(default)]
    pub amazon: Option<String>,
    /// A simulator preset: the data when `amazon` is absent or its files are not downloaded.
    #[serde(default)]
    pub synth: Option<String>,
    /// A prepared dataset folder (`mtrec prepare`).
    #[serde(default)]
    pub prepared: Option<PathBuf>,
    /// The simulator folder whose log `prepared` is (enables the ground-truth metrics).
    #[serde(default)]
    pub world: Option<PathBuf>,
}

/// `ranking:` of a profile (`mtrec_truth::RankingConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankingSpec {
    pub candidates: usize,
    pub top_k: usize,
    #[serde(default)]
    pub steps_per_user: Option<usize>,
}

impl Default for RankingSpec {
    fn default() -> Self {
        RankingSpec {
            candidates: 20,
            top_k: 5,
            steps_per_user: None,
        }
    }
}

/// A budget profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    /// `mtrec_train::TrainConfig` keys over its defaults (seed and kappa are set per cell).
    #[serde(default)]
    pub train: serde_norway::Mapping,
    /// `mtrec_reward::RewardConfig` keys over the `base` profile (kind and seed are set per cell).
    #[serde(default)]
    pub reward: serde_norway::Mapping,
    /// Multipliers of `max_steps` and the reward steps, per backbone.
    #[serde(default)]
    pub budget_scale: BTreeMap<String, f64>,
    /// Backbone settings over `experiments/models/<name>.yaml`, per backbone.
    #[serde(default)]
    pub models: BTreeMap<String, serde_norway::Mapping>,
    #[serde(default)]
    pub ranking: RankingSpec,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table1Config {
    pub profile: String,
    pub datasets: Vec<DatasetSpec>,
    pub models: Vec<String>,
    pub variants: Vec<Variant>,
    pub seeds: Vec<u64>,
    pub kappa: f64,
    pub data_seed: u64,
    pub reward_seed: u64,
    pub profiles: BTreeMap<String, ProfileSpec>,
}

impl Table1Config {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let cfg: Table1Config = serde_norway::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(cfg)
    }

    /// Checks names and values; errors name the key.
    pub fn validate(&self, origin: &Path) -> Result<()> {
        let o = origin.display();
        if self.datasets.is_empty() {
            bail!("{o}: datasets: the list is empty");
        }
        let mut names = std::collections::HashSet::new();
        for d in &self.datasets {
            if !names.insert(d.name.to_ascii_lowercase()) {
                bail!("{o}: datasets: '{}' appears twice", d.name);
            }
            if d.name.is_empty() || d.name.contains(['/', '\\']) {
                bail!(
                    "{o}: datasets: '{}' is not a usable name (it names a folder)",
                    d.name
                );
            }
            match (&d.amazon, &d.synth, &d.prepared) {
                (_, _, Some(_)) if d.amazon.is_some() || d.synth.is_some() => bail!(
                    "{o}: dataset '{}': `prepared` excludes `amazon` and `synth`",
                    d.name
                ),
                (None, None, None) => bail!(
                    "{o}: dataset '{}': needs `amazon` (+ `synth` fallback), `synth` or `prepared`",
                    d.name
                ),
                _ => {}
            }
            if let Some(a) = &d.amazon {
                if !["electronics", "books"].contains(&a.to_ascii_lowercase().as_str()) {
                    bail!(
                        "{o}: dataset '{}': amazon: '{a}' (expected electronics or books)",
                        d.name
                    );
                }
            }
            if let Some(p) = &d.synth {
                if !mtrec_synth::PRESETS.contains(&p.as_str()) {
                    bail!(
                        "{o}: dataset '{}': synth: unknown preset '{p}' (known: {})",
                        d.name,
                        mtrec_synth::PRESETS.join(", ")
                    );
                }
            }
            if d.world.is_some() && d.prepared.is_none() {
                bail!("{o}: dataset '{}': `world` goes with `prepared`", d.name);
            }
        }
        if self.models.is_empty() {
            bail!("{o}: models: the list is empty");
        }
        for m in &self.models {
            if !mtrec_models::is_known(m) {
                bail!(
                    "{o}: models: unknown model '{m}' (known: {})",
                    mtrec_models::names().join(", ")
                );
            }
        }
        if self.variants.is_empty() {
            bail!("{o}: variants: the list is empty");
        }
        if self.seeds.is_empty() {
            bail!("{o}: seeds: the list is empty");
        }
        if !(self.kappa.is_finite() && self.kappa > 0.0) {
            bail!("{o}: kappa: {} (expected a positive number)", self.kappa);
        }
        if !self.profiles.contains_key(&self.profile) {
            bail!(
                "{o}: profile '{}' is not under `profiles` (there: {})",
                self.profile,
                self.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        for (pname, p) in &self.profiles {
            for (m, s) in &p.budget_scale {
                if !mtrec_models::is_known(m) {
                    bail!("{o}: profiles.{pname}.budget_scale: unknown model '{m}'");
                }
                if !(s.is_finite() && *s > 0.0) {
                    bail!("{o}: profiles.{pname}.budget_scale.{m}: {s} (expected > 0)");
                }
            }
            for m in p.models.keys() {
                if !mtrec_models::is_known(m) {
                    bail!("{o}: profiles.{pname}.models: unknown model '{m}'");
                }
            }
            for key in p.train.keys() {
                let k = key.as_str().unwrap_or("?");
                if k == "seed" || k == "kappa" {
                    bail!("{o}: profiles.{pname}.train.{k}: set per cell (use `seeds` / `kappa`)");
                }
            }
            for key in p.reward.keys() {
                let k = key.as_str().unwrap_or("?");
                if k == "kind" || k == "seed" {
                    bail!("{o}: profiles.{pname}.reward.{k}: set per cell (use `reward_seed`)");
                }
            }
            if p.ranking.candidates < 2 || p.ranking.top_k == 0 {
                bail!("{o}: profiles.{pname}.ranking: needs candidates >= 2 and top_k >= 1");
            }
        }
        Ok(())
    }

    pub fn active_profile(&self) -> &ProfileSpec {
        &self.profiles[&self.profile]
    }
}

/// Overlays `over` on the serialised `base` and reads it back: unknown keys are errors naming
/// `origin`.
pub fn overlay<T>(base: &T, over: &serde_norway::Mapping, origin: &str) -> Result<T>
where
    T: Serialize + for<'de> Deserialize<'de>,
{
    let mut v = serde_norway::to_value(base)?;
    let m = v
        .as_mapping_mut()
        .ok_or_else(|| anyhow::anyhow!("{origin}: settings are not a mapping"))?;
    for (k, val) in over {
        m.insert(k.clone(), val.clone());
    }
    serde_norway::from_value(v).map_err(|e| anyhow::anyhow!("{origin}: {e}"))
}

/// The training settings of a cell of `model` under `profile` (seed and kappa left at default).
pub fn train_settings(
    p: &ProfileSpec,
    profile: &str,
    model: &str,
) -> Result<mtrec_train::TrainConfig> {
    let mut t: mtrec_train::TrainConfig = overlay(
        &mtrec_train::TrainConfig::default(),
        &p.train,
        &format!("profiles.{profile}.train"),
    )?;
    if let (Some(steps), Some(scale)) = (t.max_steps, p.budget_scale.get(model)) {
        t.max_steps = Some(((steps as f64 * scale).round() as u64).max(1));
    }
    if let (Some(every), Some(scale)) = (t.checkpoint_every, p.budget_scale.get(model)) {
        t.checkpoint_every = Some(((every as f64 * scale).round() as u64).max(1));
    }
    Ok(t)
}

/// The reward settings of `model`'s fits under `profile` (kind and seed set by the caller).
pub fn reward_settings(
    p: &ProfileSpec,
    profile: &str,
    model: &str,
) -> Result<mtrec_reward::RewardConfig> {
    let mut over = p.reward.clone();
    let base = match over.remove("base") {
        Some(v) => v
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("profiles.{profile}.reward.base: expected a name"))?
            .parse::<mtrec_reward::Profile>()
            .map_err(|e| anyhow::anyhow!("profiles.{profile}.reward.base: {e}"))?,
        None => mtrec_reward::Profile::Quick,
    };
    let mut r: mtrec_reward::RewardConfig = overlay(
        &mtrec_reward::RewardConfig::profile(base),
        &over,
        &format!("profiles.{profile}.reward"),
    )?;
    if let Some(scale) = p.budget_scale.get(model) {
        r.steps = ((r.steps as f64 * scale).round() as u64).max(1);
        if r.checkpoint_every > 0 {
            r.checkpoint_every = ((r.checkpoint_every as f64 * scale).round() as u64).max(1);
        }
    }
    r.validate()
        .map_err(|e| anyhow::anyhow!("profiles.{profile}.reward ({model}): {e}"))?;
    Ok(r)
}

/// The backbone settings of `model`: `experiments/models/<model>.yaml` when present (else the
/// defaults), then the profile's overrides.
pub fn model_settings(
    p: &ProfileSpec,
    profile: &str,
    model: &str,
    models_dir: &Path,
) -> Result<serde_norway::Value> {
    let file = models_dir.join(format!("{model}.yaml"));
    let mut v = if file.exists() {
        let text = mtrec_models::load_config_file(&file)?;
        mtrec_models::check_config(model, Some(&text), &file.display().to_string())?
    } else {
        mtrec_models::effective_config(model, None)?
    };
    if let Some(over) = p.models.get(model) {
        let m = v
            .as_mapping_mut()
            .ok_or_else(|| anyhow::anyhow!("{model}: settings are not a mapping"))?;
        for (k, val) in over {
            m.insert(k.clone(), val.clone());
        }
        let text = serde_norway::to_string(&v)?;
        v = mtrec_models::check_config(model, Some(&text), &format!("profiles.{profile}.models"))?;
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Table1Config {
        let p = crate::root().join("experiments/table1.yaml");
        let c = Table1Config::read(&p).unwrap();
        c.validate(&p).unwrap();
        c
    }

    #[test]
    fn shipped_file_is_valid_and_resolves_every_model() {
        let c = shipped();
        for (name, p) in &c.profiles {
            for m in &c.models {
                train_settings(p, name, m).unwrap();
                reward_settings(p, name, m).unwrap();
                model_settings(p, name, m, &crate::root().join("experiments/models")).unwrap();
            }
        }
    }

    #[test]
    fn budget_scale_multiplies_steps() {
        let c = shipped();
        let p = &c.profiles["quick"];
        let base = train_settings(p, "quick", "widedeep").unwrap();
        let sigma = train_settings(p, "quick", "sigma").unwrap();
        let s = p.budget_scale["sigma"];
        assert_eq!(
            sigma.max_steps,
            Some((base.max_steps.unwrap() as f64 * s).round() as u64)
        );
        let rb = reward_settings(p, "quick", "widedeep").unwrap();
        let rs = reward_settings(p, "quick", "sigma").unwrap();
        assert_eq!(rs.steps, (rb.steps as f64 * s).round() as u64);
        assert_eq!(rb.batch_size, 256);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let text = "profile: quick\ndatasets: []\nmodels: [din]\nvariants: [plain]\nseeds: [1]\nkappa: 0.2\ndata_seed: 1\nreward_seed: 1\nprofiles: {}\ncolour: red\n";
        let e = serde_norway::from_str::<Table1Config>(text).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        let c = shipped();
        let mut p = c.profiles["quick"].clone();
        p.train.insert("epocs".into(), 2.into());
        let e = train_settings(&p, "quick", "din").unwrap_err();
        assert!(e.to_string().contains("epocs"), "{e}");
        let mut p = c.profiles["quick"].clone();
        p.models.insert(
            "din".into(),
            [("attention".into(), 1.into())].into_iter().collect(),
        );
        let e = model_settings(&p, "quick", "din", Path::new("/nonexistent")).unwrap_err();
        assert!(e.to_string().contains("attention"), "{e}");
    }

    #[test]
    fn validation_names_the_problem() {
        let mut c = shipped();
        c.models.push("gpt".into());
        let e = c.validate(Path::new("t.yaml")).unwrap_err();
        assert!(e.to_string().contains("gpt"), "{e}");
        let mut c = shipped();
        c.datasets[0].synth = Some("mars".into());
        let e = c.validate(Path::new("t.yaml")).unwrap_err();
        assert!(e.to_string().contains("mars"), "{e}");
        let mut c = shipped();
        c.profile = "huge".into();
        assert!(c.validate(Path::new("t.yaml")).is_err());
    }
}
