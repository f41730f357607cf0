//! The paper's Table 1 (Zhao et al., NeurIPS 2025), copied from `../shared/paper/MTRec-paper.txt`:
//! AUC and ΔNCIS on the real Amazon 2014 5-core Electronics and Books.

use super::config::Variant;

/// `(model, variant, [Electronics AUC, Electronics NCIS, Books AUC, Books NCIS])`.
const TABLE: [(&str, Variant, [f64; 4]); 24] = [
    ("widedeep", Variant::Plain, [0.8290, 0.6749, 0.8605, 2.0967]),
    ("widedeep", Variant::Irl, [0.8342, 0.8738, 0.8661, 3.1264]),
    ("widedeep", Variant::Mtrec, [0.8351, 0.9063, 0.8657, 3.2043]),
    ("pnn", Variant::Plain, [0.8396, 0.6618, 0.8603, 2.3316]),
    ("pnn", Variant::Irl, [0.8547, 0.9297, 0.8673, 3.4567]),
    ("pnn", Variant::Mtrec, [0.8542, 0.9515, 0.8679, 3.4971]),
    ("deepfm", Variant::Plain, [0.8424, 0.6993, 0.8634, 2.3146]),
    ("deepfm", Variant::Irl, [0.8458, 0.8542, 0.8715, 3.7296]),
    ("deepfm", Variant::Mtrec, [0.8468, 0.8961, 0.8742, 3.7904]),
    ("sasrec", Variant::Plain, [0.8325, 0.8243, 0.8675, 3.1755]),
    ("sasrec", Variant::Irl, [0.8366, 0.8681, 0.8681, 3.1946]),
    ("sasrec", Variant::Mtrec, [0.8328, 0.8833, 0.8798, 3.4634]),
    ("din", Variant::Plain, [0.8523, 0.6044, 0.8653, 2.1324]),
    ("din", Variant::Irl, [0.8533, 0.8168, 0.8701, 3.1675]),
    ("din", Variant::Mtrec, [0.8542, 0.8728, 0.8732, 3.2208]),
    ("dien", Variant::Plain, [0.8448, 0.7766, 0.8686, 2.2685]),
    ("dien", Variant::Irl, [0.8461, 0.8857, 0.8723, 3.0476]),
    ("dien", Variant::Mtrec, [0.8472, 0.9324, 0.8757, 3.1185]),
    ("linrec", Variant::Plain, [0.8579, 0.8077, 0.8754, 2.4653]),
    ("linrec", Variant::Irl, [0.8597, 0.9365, 0.8771, 3.8005]),
    ("linrec", Variant::Mtrec, [0.8594, 0.9782, 0.8792, 3.7928]),
    ("sigma", Variant::Plain, [0.8581, 0.7946, 0.8762, 2.3975]),
    ("sigma", Variant::Irl, [0.8592, 0.9261, 0.8802, 3.7556]),
    ("sigma", Variant::Mtrec, [0.8604, 0.9563, 0.8814, 3.8025]),
];

/// The paper's `(AUC, NCIS)` of a cell, for a dataset named Electronics or Books.
pub fn value(dataset: &str, model: &str, variant: Variant) -> Option<(f64, f64)> {
    let col = match dataset.to_ascii_lowercase().as_str() {
        "electronics" => 0,
        "books" => 2,
        _ => return None,
    };
    TABLE
        .iter()
        .find(|(m, v, _)| *m == model && *v == variant)
        .map(|(_, _, x)| (x[col], x[col + 1]))
}

/// The backbone's name as the paper prints it.
pub fn display_name(model: &str) -> &str {
    match model {
        "widedeep" => "Wide&Deep",
        "pnn" => "PNN",
        "deepfm" => "DeepFM",
        "sasrec" => "SASRec",
        "din" => "DIN",
        "dien" => "DIEN",
        "linrec" => "LinRec",
        "sigma" => "SIGMA",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_backbone_and_variant_has_both_datasets() {
        for m in mtrec_models::names() {
            for v in Variant::ALL {
                assert!(value("Electronics", m, v).is_some(), "{m} {v:?}");
                assert!(value("books", m, v).is_some(), "{m} {v:?}");
            }
        }
        assert_eq!(
            value("Books", "din", Variant::Mtrec),
            Some((0.8732, 3.2208))
        );
        assert_eq!(value("Beauty", "din", Variant::Plain), None);
    }
}
