//! The learning pipeline end to end: records in, profiles out.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use umbra_core::RequestRecord;
use umbra_learn::kmeans::adjusted_rand_index;
use umbra_learn::profiles::{KSpec, LearnOptions, learn};
use umbra_learn::read::{self, Format};
use umbra_learn::synth::{SynthLog, group_names};
use umbra_learn::update::{UpdateOptions, update};

const SHOP_LOG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/data/logs/shop-access-1k.log"
);

/// Parses synthetic lines with the combined-format reader.
fn synth_records(
    seed: u64,
    start_ms: i64,
    n: usize,
    groups: Option<&[usize]>,
) -> (Vec<RequestRecord>, Vec<u32>) {
    let mut log = SynthLog::new(seed, start_ms, 50.0);
    if let Some(g) = groups {
        log = log.only_groups(g);
    }
    let mut parser = read::line_parser(&Format::Combined).expect("combined parser");
    let mut records = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let (line, label) = log.next_line();
        let r = parser
            .parse(line.as_bytes())
            .unwrap_or_else(|e| panic!("synthetic line did not parse: {e}: {line}"))
            .expect("a record");
        records.push(r);
        labels.push(label as u32);
    }
    (records, labels)
}

#[test]
fn recovers_known_groups_with_auto_k() {
    let (records, truth) = synth_records(11, 1_700_000_000_000, 20_000, None);
    let learned = learn(&records, Vec::new(), &LearnOptions::default()).expect("learn");
    let ari = adjusted_rand_index(&truth, &learned.assignments);
    eprintln!(
        "k={} ({}), ARI {ari:.4}",
        learned.set.profiles.len(),
        learned.set.clustering.reason
    );
    for p in &learned.set.profiles {
        eprintln!("  {:5.1}%  {}", p.share * 100.0, p.name);
    }
    assert!(ari >= 0.9, "adjusted Rand index {ari} < 0.9");
    // Two of the eight groups mix two kinds of page each (crawlers on products
    // and categories; scripts and stylesheets), which may come out as two profiles.
    let k = learned.set.profiles.len();
    assert!(
        (group_names().len()..=group_names().len() + 2).contains(&k),
        "k = {k}"
    );
}

#[test]
fn recovers_known_groups_on_other_seeds_and_more_errors() {
    for (seed, errors) in [(1, 0.02), (2, 0.02), (3, 0.05)] {
        let mut log = SynthLog::new(seed, 1_700_000_000_000, 50.0).with_error_rate(errors);
        let mut parser = read::line_parser(&Format::Combined).expect("combined parser");
        let (mut records, mut truth) = (Vec::new(), Vec::new());
        for _ in 0..10_000 {
            let (line, label) = log.next_line();
            records.push(
                parser
                    .parse(line.as_bytes())
                    .expect("parses")
                    .expect("record"),
            );
            truth.push(label as u32);
        }
        let opts = LearnOptions {
            seed,
            ..LearnOptions::default()
        };
        let learned = learn(&records, Vec::new(), &opts).expect("learn");
        let ari = adjusted_rand_index(&truth, &learned.assignments);
        eprintln!(
            "seed {seed}, errors {errors}: k={} ARI {ari:.4}",
            learned.set.profiles.len()
        );
        assert!(ari >= 0.9, "seed {seed}: adjusted Rand index {ari} < 0.9");
    }
}

#[test]
fn shares_match_the_traffic_and_the_file_round_trips() {
    let (records, truth) = synth_records(5, 1_700_000_000_000, 10_000, None);
    let learned = learn(&records, Vec::new(), &LearnOptions::default()).expect("learn");
    let set = &learned.set;
    let sum: f64 = set.profiles.iter().map(|p| p.share).sum();
    assert!((sum - 1.0).abs() < 1e-9);
    // Each profile's share is the fraction of records assigned to it.
    for (i, p) in set.profiles.iter().enumerate() {
        let n = learned
            .assignments
            .iter()
            .filter(|a| **a as usize == i)
            .count();
        assert!((p.share - n as f64 / records.len() as f64).abs() < 1e-9);
        assert!(!p.templates.is_empty());
    }
    let _ = truth;
    let text = set.to_json();
    let back = umbra_core::ProfileSet::from_json("test", &text).expect("valid file");
    assert_eq!(&back, set);
    // The measured rate is the synthetic one (50 req/s) within noise.
    assert!(
        (set.baseline_rps - 50.0).abs() < 5.0,
        "baseline {}",
        set.baseline_rps
    );
}

#[test]
fn update_moves_shares_as_the_decay_predicts() {
    // Old traffic: groups 0 and 1 only, all at t0. New traffic six hours later:
    // group 4 only (new behaviour), with a half-life of six hours.
    let t0 = 1_700_000_000_000;
    let (old, _) = synth_records(3, t0, 4000, Some(&[0, 1]));
    let opts = LearnOptions {
        k: KSpec::Fixed(2),
        ..LearnOptions::default()
    };
    let set = learn(&old, Vec::new(), &opts).expect("learn").set;
    let as_of = set.as_of_ms.expect("timestamps");
    let old_shares: Vec<f64> = set.profiles.iter().map(|p| p.share).collect();

    // New records all stamped at exactly as_of + 6h so the expected numbers are exact.
    let six_h = 6 * 3600 * 1000;
    let (mut new, _) = synth_records(4, as_of + six_h, 1000, Some(&[4]));
    for r in &mut new {
        r.timestamp_ms = Some(as_of + six_h);
    }
    let (updated, report) = update(
        &set,
        &new,
        Vec::new(),
        &UpdateOptions {
            half_life_secs: Some(6.0 * 3600.0),
            ..UpdateOptions::default()
        },
    )
    .expect("update");
    assert!((report.decay - 0.5).abs() < 1e-12, "decay {}", report.decay);
    assert_eq!(report.novel, 1000, "group 4 is new behaviour");
    assert_eq!(
        updated.profiles.len(),
        3,
        "{:?}",
        updated.profiles.iter().map(|p| &p.name).collect::<Vec<_>>()
    );
    // Old mass 4000 × 0.5 = 2000, new mass 1000: the new profile has 1/3, the
    // old ones keep their relative sizes in the other 2/3.
    let new_p = updated
        .profiles
        .iter()
        .find(|p| !set.profiles.iter().any(|o| o.id == p.id))
        .expect("new profile");
    assert!(
        (new_p.share - 1.0 / 3.0).abs() < 1e-9,
        "new share {}",
        new_p.share
    );
    for (o, s) in set.profiles.iter().zip(&old_shares) {
        let u = updated
            .profiles
            .iter()
            .find(|p| p.id == o.id)
            .expect("kept id");
        assert!(
            (u.share - s * 2.0 / 3.0).abs() < 1e-9,
            "{}: {} vs {}",
            o.name,
            u.share,
            s * 2.0 / 3.0
        );
    }

    // Folding in more of an existing behaviour grows that profile as predicted:
    // 12 h later (decay 0.25), 1000 more group-0 requests.
    let as_of2 = updated.as_of_ms.expect("as_of");
    let (mut more, _) = synth_records(5, as_of2 + 2 * six_h, 1000, Some(&[0]));
    for r in &mut more {
        r.timestamp_ms = Some(as_of2 + 2 * six_h);
    }
    let (again, rep2) =
        update(&updated, &more, Vec::new(), &UpdateOptions::default()).expect("update");
    assert!((rep2.decay - 0.25).abs() < 1e-12);
    assert_eq!(rep2.novel, 0);
    let total_before: f64 = updated.profiles.iter().map(|p| p.mass).sum();
    let expected_total = total_before * 0.25 + 1000.0;
    let got_total: f64 = again.profiles.iter().map(|p| p.mass).sum();
    assert!((got_total - expected_total).abs() < 1e-6);
    // The profile that took group 0 gained exactly the 1000 new requests.
    let gained: Vec<f64> = again
        .profiles
        .iter()
        .map(|p| {
            let before = updated
                .profiles
                .iter()
                .find(|o| o.id == p.id)
                .map_or(0.0, |o| o.mass * 0.25);
            p.mass - before
        })
        .collect();
    let max = gained.iter().cloned().fold(0.0, f64::max);
    assert!((max - 1000.0).abs() < 1e-6, "gains {gained:?}");
}

#[test]
fn old_profiles_retire_when_they_decay_below_the_floor() {
    let t0 = 1_700_000_000_000;
    let (old, _) = synth_records(8, t0, 2000, Some(&[0, 6]));
    let set = learn(
        &old,
        Vec::new(),
        &LearnOptions {
            k: KSpec::Fixed(2),
            ..LearnOptions::default()
        },
    )
    .expect("learn")
    .set;
    // Three days later with a one-hour half-life the old mass is ~2000 × 2^-72: gone.
    let (mut new, _) = synth_records(9, t0 + 72 * 3600 * 1000, 2000, Some(&[4]));
    for r in &mut new {
        r.timestamp_ms = Some(t0 + 72 * 3600 * 1000);
    }
    let (updated, report) = update(
        &set,
        &new,
        Vec::new(),
        &UpdateOptions {
            half_life_secs: Some(3600.0),
            ..UpdateOptions::default()
        },
    )
    .expect("update");
    assert_eq!(report.retired.len(), 2, "{report:?}");
    assert!(
        updated
            .profiles
            .iter()
            .all(|p| !set.profiles.iter().any(|o| o.id == p.id))
    );
}

/// Share of records whose profile's majority agrees with the record's own side.
fn separation(assign: &[u32], side: &[bool], k: usize) -> f64 {
    let mut yes = vec![0usize; k];
    let mut all = vec![0usize; k];
    for (a, s) in assign.iter().zip(side) {
        all[*a as usize] += 1;
        if *s {
            yes[*a as usize] += 1;
        }
    }
    let agree: usize = assign
        .iter()
        .zip(side)
        .filter(|(a, s)| {
            let majority = yes[**a as usize] * 2 >= all[**a as usize];
            majority == **s
        })
        .count();
    agree as f64 / assign.len() as f64
}

#[test]
fn shop_log_separates_crawlers_images_and_filters() {
    let mut records = Vec::new();
    let report =
        read::read_source(SHOP_LOG, &Format::Auto, &mut |r| records.push(r)).expect("read");
    assert_eq!(report.bad, 0);
    let learned = learn(&records, Vec::new(), &LearnOptions::default()).expect("learn");
    let k = learned.set.profiles.len();
    for p in &learned.set.profiles {
        eprintln!("  {:5.1}%  {}", p.share * 100.0, p.name);
    }
    let bot: Vec<bool> = records
        .iter()
        .map(|r| {
            umbra_learn::user_agent::classify(r.user_agent.as_deref()) == umbra_core::UaClass::Bot
        })
        .collect();
    let image: Vec<bool> = records
        .iter()
        .map(|r| r.path.starts_with("/image/"))
        .collect();
    let a = &learned.assignments;
    let s_bot = separation(a, &bot, k);
    let s_img = separation(a, &image, k);
    // Filters against product pages, among the records that are one or the other.
    let (mut fa, mut fs) = (Vec::new(), Vec::new());
    for (i, r) in records.iter().enumerate() {
        let filter = r.path.starts_with("/filter") || r.path.starts_with("/m/filter");
        let product = r.path.starts_with("/product") || r.path.starts_with("/m/product");
        if filter != product {
            fa.push(a[i]);
            fs.push(filter);
        }
    }
    let s_filter = separation(&fa, &fs, k);
    eprintln!("separation: crawlers {s_bot:.3}, images {s_img:.3}, filters/products {s_filter:.3}");
    assert!(s_bot >= 0.9, "crawlers vs shoppers {s_bot}");
    assert!(s_img >= 0.95, "images vs pages {s_img}");
    assert!(s_filter >= 0.9, "filters vs product pages {s_filter}");
}

#[test]
fn profiles_keep_no_personal_data() {
    let mut parser = read::line_parser(&Format::Combined).expect("combined parser");
    let mut records = Vec::new();
    let secrets = [
        "jane.doe@corp.example.org",
        "4155550123987",
        "sk9Fq2Lm8Xr4Tz7Vb1Nc6Hd3",
        "0912-555-0147",
    ];
    for i in 0..400 {
        let line = match i % 4 {
            0 => format!(
                "10.0.0.{} - - [22/Jan/2019:03:56:{:02} +0000] \"GET /users/{}/orders HTTP/1.1\" 200 512 \"-\" \"okhttp/4.9\"",
                i % 250,
                i % 60,
                secrets[0]
            ),
            1 => format!(
                "10.0.0.{} - - [22/Jan/2019:03:56:{:02} +0000] \"GET /account?phone={}&email={} HTTP/1.1\" 200 812 \"-\" \"Mozilla/5.0 (X11)\"",
                i % 250,
                i % 60,
                secrets[1],
                secrets[0]
            ),
            2 => format!(
                "10.0.0.{} - - [22/Jan/2019:03:56:{:02} +0000] \"GET /session/{}/state HTTP/1.1\" 200 90 \"-\" \"okhttp/4.9\"",
                i % 250,
                i % 60,
                secrets[2]
            ),
            _ => format!(
                "10.0.0.{} - - [22/Jan/2019:03:56:{:02} +0000] \"GET /callback?tel={} HTTP/1.1\" 302 0 \"-\" \"curl/8.0\"",
                i % 250,
                i % 60,
                secrets[3]
            ),
        };
        records.push(
            parser
                .parse(line.as_bytes())
                .expect("parses")
                .expect("record"),
        );
    }
    let set = learn(&records, Vec::new(), &LearnOptions::default())
        .expect("learn")
        .set;
    let json = set.to_json();
    for s in secrets {
        assert!(!json.contains(s), "{s} leaked into the profile file");
    }
    // The fakes keep the shape: an e-mail placeholder example is still an e-mail.
    assert!(json.contains("{email}"), "{json}");
    assert!(json.contains("@example.com"), "{json}");
}
