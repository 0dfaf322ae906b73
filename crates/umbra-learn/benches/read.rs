//! Parse speed of the line readers, in lines per second.
//!
//! The input is the 1,000-line shop log from `shared/data` repeated to
//! 100,000 lines (about 30 MB), so the timing is not dominated by one line.
//! `combined_parse` is the parser alone on lines already in memory;
//! `read_source` adds file reading, line splitting and the report, as `learn`
//! sees it. Run with `cargo bench -p umbra-learn --bench read`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use umbra_learn::read::{Format, LineParser, line_parser, read_source};

const SHOP: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/data/logs/shop-access-1k.log"
);
const REPEAT: usize = 100;

fn lines() -> Vec<Vec<u8>> {
    let text = std::fs::read(SHOP).expect("the shop log in shared/data");
    let one: Vec<Vec<u8>> = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    one.iter()
        .cycle()
        .take(one.len() * REPEAT)
        .cloned()
        .collect()
}

/// Parses every line once, returning something that depends on the result.
fn parse_all(parser: &mut dyn LineParser, lines: &[Vec<u8>]) -> usize {
    let mut n = 0usize;
    for line in lines {
        if let Ok(Some(r)) = parser.parse(line) {
            n += r.path.len();
            black_box(r);
        }
    }
    n
}

fn bench(c: &mut Criterion) {
    let lines = lines();
    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.sample_size(20);

    group.bench_function("combined_parse", |b| {
        let mut parser = line_parser(&Format::Combined).expect("a line format");
        b.iter(|| parse_all(&mut *parser, &lines));
    });

    let file = std::env::temp_dir().join(format!("umbra-bench-read-{}.log", std::process::id()));
    let mut text = Vec::new();
    for line in &lines {
        text.extend_from_slice(line);
        text.push(b'\n');
    }
    std::fs::write(&file, &text).expect("write the bench input");
    let name = file.to_str().expect("utf-8 temp path").to_string();
    for (label, format) in [
        ("read_source_combined", Format::Combined),
        ("read_source_auto", Format::Auto),
    ] {
        group.bench_function(label, |b| {
            b.iter(|| {
                let mut n = 0u64;
                let report = read_source(&name, &format, &mut |r| {
                    n += 1;
                    black_box(r);
                })
                .expect("readable");
                assert_eq!(report.records, lines.len() as u64);
                n
            });
        });
    }
    group.finish();
    let _ = std::fs::remove_file(&file);
}

criterion_group!(benches, bench);
criterion_main!(benches);
