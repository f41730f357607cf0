use super::*;
use candle_core::Device;
use mtrec_data::interactions::RowsBuilder;
use mtrec_data::{prepare, PrepareConfig};

/// 60 users with 1..=12 steps over 40 items in 5 categories, time ties included.
fn dataset(max_history: usize) -> PreparedDataset {
    let mut rows = RowsBuilder::default();
    for u in 0..60u32 {
        let n = 1 + (u as usize * 7) % 12;
        for t in 0..n {
            let item = (u as usize * 13 + t * 5) % 40;
            let time = (t / 2) as i64; // pairs of steps share a time: file order breaks the tie
            rows.push(
                &format!("u{u}"),
                &format!("i{item}"),
                &format!("c{}", item % 5),
                time,
                0,
                (u as u64) * 100 + t as u64 + 1,
            );
        }
    }
    let table = rows.finish(vec!["mem".into()], "test").unwrap();
    let cfg = PrepareConfig {
        max_history,
        ..PrepareConfig::default()
    };
    prepare(&table, &cfg, vec![]).unwrap()
}

#[test]
fn history_strictly_precedes_the_target() {
    let ds = dataset(4);
    for s in samples(&ds, Split::All) {
        let seq = ds.sequence(s.user as usize);
        let t = s.step as usize;
        let h = s.history(&ds, 4);
        assert!(t >= 1, "samples start at the second step");
        assert_eq!(h.len(), t.min(4));
        assert_eq!(h, &seq[t - h.len()..t]);
        let times = ds.times(s.user as usize);
        assert!(times[t - h.len()..t].iter().all(|&x| x <= times[t]));
    }
}

#[test]
fn negatives_are_never_positives_of_the_user() {
    let ds = dataset(100);
    for u in 1..=ds.n_users() {
        for n in ds.negatives(u) {
            assert!(!ds.sequence(u).contains(n));
        }
    }
    for s in samples(&ds, Split::All).into_iter().filter(|s| !s.positive) {
        assert!(!ds.sequence(s.user as usize).contains(&s.item(&ds)));
    }
}

#[test]
fn no_test_user_in_training_transitions() {
    let ds = dataset(100);
    let train = transitions(&ds, Split::Train);
    let test = transitions(&ds, Split::Test);
    assert!(!train.is_empty() && !test.is_empty());
    for tr in &train {
        assert!(!ds.is_test(tr.state.user as usize));
        assert!(!ds.is_test(tr.next.user as usize));
    }
    assert_eq!(
        train.len() + test.len(),
        ds.manifest.counts.train_samples + ds.manifest.counts.test_samples
    );
}

#[test]
fn done_only_at_the_end_and_logged_next_states() {
    let ds = dataset(100);
    for tr in transitions(&ds, Split::All) {
        let n = ds.sequence(tr.state.user as usize).len() as u32;
        assert_eq!(tr.action, tr.state.label());
        assert_eq!(tr.done, tr.state.positive && tr.state.step == n - 1);
        if tr.state.positive && !tr.done {
            assert_eq!(tr.next.step, tr.state.step + 1);
            assert!(tr.next.positive);
            // s' history = s history + the engaged item
            let h = tr.next.history(&ds, 100);
            assert_eq!(*h.last().unwrap(), tr.state.item(&ds));
        }
        if !tr.state.positive {
            assert_eq!(
                tr.next,
                State {
                    positive: true,
                    ..tr.state
                }
            );
            assert!(!tr.done);
        }
    }
}

#[test]
fn batches_are_padded_masked_and_aligned() {
    let ds = dataset(5);
    let states = samples(&ds, Split::All);
    let pick: Vec<State> = states.iter().step_by(7).take(16).copied().collect();
    let dev = Device::Cpu;
    let left = Batcher::new(&ds).batch(&pick, &dev).unwrap();
    let longest = pick.iter().map(|s| (s.step as usize).min(5)).max().unwrap();
    assert_eq!(left.width, longest);
    assert_eq!(left.hist_items.dims(), &[16, longest]);
    let items = left.hist_items.to_vec2::<u32>().unwrap();
    let cats = left.hist_cats.to_vec2::<u32>().unwrap();
    let mask = left.mask.to_vec2::<f32>().unwrap();
    let lens = left.lengths.to_vec1::<u32>().unwrap();
    let targets = left.target_items.to_vec1::<u32>().unwrap();
    let tcats = left.target_cats.to_vec1::<u32>().unwrap();
    let labels = left.labels.to_vec1::<f32>().unwrap();
    let users = left.users.to_vec1::<u32>().unwrap();
    let negs = left.hist_neg_items.to_vec2::<u32>().unwrap();
    let neg_cats = left.hist_neg_cats.to_vec2::<u32>().unwrap();
    for (r, s) in pick.iter().enumerate() {
        let h = s.history(&ds, 5);
        assert_eq!(users[r], s.user);
        let t = s.step as usize;
        assert_eq!(
            &negs[r][..h.len()],
            &ds.negatives(s.user as usize)[t - h.len()..t]
        );
        assert!(negs[r][h.len()..].iter().all(|&x| x == 0));
        for k in 0..h.len() {
            assert_eq!(neg_cats[r][k], ds.item_category()[negs[r][k] as usize]);
        }
        assert_eq!(lens[r] as usize, h.len());
        assert_eq!(&items[r][..h.len()], h);
        assert!(items[r][h.len()..].iter().all(|&x| x == 0));
        assert_eq!(mask[r].iter().sum::<f32>() as usize, h.len());
        for k in 0..h.len() {
            assert_eq!(cats[r][k], ds.item_category()[h[k] as usize]);
        }
        assert_eq!(targets[r], s.item(&ds));
        assert_eq!(tcats[r], ds.item_category()[targets[r] as usize]);
        assert_eq!(labels[r], s.label() as f32);
    }
    let right = Batcher::new(&ds)
        .with_pad(PadPolicy::Fixed)
        .with_align(Align::Right)
        .batch(&pick, &dev)
        .unwrap();
    assert_eq!(right.width, 5);
    let ritems = right.hist_items.to_vec2::<u32>().unwrap();
    let rmask = right.mask.to_vec2::<f32>().unwrap();
    for (r, s) in pick.iter().enumerate() {
        let h = s.history(&ds, 5);
        assert_eq!(&ritems[r][5 - h.len()..], h);
        let t = s.step as usize;
        let rnegs = right.hist_neg_items.to_vec2::<u32>().unwrap();
        assert_eq!(
            &rnegs[r][5 - h.len()..],
            &ds.negatives(s.user as usize)[t - h.len()..t]
        );
        assert!(rmask[r][..5 - h.len()].iter().all(|&m| m == 0.0));
    }
}

#[test]
fn arbitrary_target_items_keep_the_state_history() {
    let ds = dataset(5);
    let dev = Device::Cpu;
    let b = Batcher::new(&ds).with_align(Align::Right);
    let states: Vec<State> = samples(&ds, Split::All)
        .into_iter()
        .filter(|s| s.positive)
        .step_by(5)
        .take(12)
        .collect();
    // Each state with its logged positive, its negative and an arbitrary item.
    let mut rows = Vec::new();
    for s in &states {
        let neg = State {
            positive: false,
            ..*s
        };
        let other = (s.item(&ds) + 7) % ds.n_items() as u32 + 1;
        rows.extend([(*s, s.item(&ds)), (*s, neg.item(&ds)), (*s, other)]);
    }
    let got = b.batch_items(&rows, &dev).unwrap();
    let as_states: Vec<State> = states
        .iter()
        .flat_map(|s| {
            let neg = State {
                positive: false,
                ..*s
            };
            [*s, neg, *s]
        })
        .collect();
    let want = b.batch(&as_states, &dev).unwrap();
    // Histories are those of the state, whatever the target.
    assert_eq!(got.width, want.width);
    for (g, w) in [
        (&got.hist_items, &want.hist_items),
        (&got.hist_neg_items, &want.hist_neg_items),
        (&got.hist_cats, &want.hist_cats),
        (&got.users, &want.users),
        (&got.lengths, &want.lengths),
    ] {
        assert_eq!(
            g.flatten_all().unwrap().to_vec1::<u32>().unwrap(),
            w.flatten_all().unwrap().to_vec1::<u32>().unwrap()
        );
    }
    let targets = got.target_items.to_vec1::<u32>().unwrap();
    let tcats = got.target_cats.to_vec1::<u32>().unwrap();
    let labels = got.labels.to_vec1::<f32>().unwrap();
    for (r, (s, item)) in rows.iter().enumerate() {
        assert_eq!(targets[r], *item);
        assert_eq!(tcats[r], ds.item_category()[*item as usize]);
        let logged = ds.sequence(s.user as usize)[s.step as usize];
        assert_eq!(labels[r], if *item == logged { 1.0 } else { 0.0 });
    }
    // The logged pair gets the labels of `batch`.
    let wl = want.labels.to_vec1::<f32>().unwrap();
    for r in 0..states.len() {
        assert_eq!(&labels[3 * r..3 * r + 2], &wl[3 * r..3 * r + 2]);
    }
    // Ids outside the dataset are refused, not read out of bounds.
    let bad = ds.item_category().len() as u32;
    assert!(b.batch_items(&[(states[0], bad)], &dev).is_err());
    assert!(b.batch_items(&[(states[0], 0)], &dev).is_err());
}

#[test]
fn transition_batches_pair_states() {
    let ds = dataset(100);
    let ts = transitions(&ds, Split::Train);
    let b = Batcher::new(&ds)
        .transitions(&ts[..10], &Device::Cpu)
        .unwrap();
    assert_eq!(b.state.size, 10);
    assert_eq!(b.next.size, 10);
    let actions = b.actions.to_vec1::<u32>().unwrap();
    let done = b.done.to_vec1::<f32>().unwrap();
    for (k, t) in ts[..10].iter().enumerate() {
        assert_eq!(actions[k], t.action);
        assert_eq!(done[k], if t.done { 1.0 } else { 0.0 });
    }
}

#[test]
fn shuffles_are_seeded_permutations() {
    let a = shuffled_indices(1000, 1, 0);
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
    assert_eq!(a, shuffled_indices(1000, 1, 0));
    assert_ne!(a, shuffled_indices(1000, 1, 1));
    assert_ne!(a, shuffled_indices(1000, 2, 0));
}

#[test]
fn last_step_pairs_one_per_user() {
    let ds = dataset(100);
    let last = last_step_samples(&ds, Split::Test);
    let users: Vec<usize> = (1..=ds.n_users())
        .filter(|&u| ds.is_test(u) && ds.sequence(u).len() >= 2)
        .collect();
    assert_eq!(last.len(), 2 * users.len());
    for s in &last {
        assert_eq!(s.step as usize, ds.sequence(s.user as usize).len() - 1);
    }
}
