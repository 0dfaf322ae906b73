//! `umbra profiles`: look at and adjust a profile set.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use umbra_core::ProfileSet;

use crate::cmd::learn::write_set;

/// Look at or adjust a profile set written by `umbra learn`.
#[derive(Subcommand)]
pub enum ProfilesCommand {
    /// Print the set as a table: each profile's share, rate, templates and sizes.
    Show {
        /// The profile file.
        file: PathBuf,
        /// Print the whole set as JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Set the volume and mix: the baseline rate, the stress multiplier and
    /// per-profile weights (written back to the file).
    Set {
        /// The profile file.
        file: PathBuf,
        /// Baseline request rate of the whole set, per second.
        #[arg(long)]
        baseline_rps: Option<f64>,
        /// Multiplier on the baseline (2 = twice the traffic).
        #[arg(long)]
        stress: Option<f64>,
        /// A profile's relative weight, by id or name: `p-1a2b3c4d=0.5`. Repeatable.
        /// `ID=learned` removes an override.
        #[arg(long = "weight", value_name = "PROFILE=WEIGHT")]
        weights: Vec<String>,
    },
}

pub fn run(cmd: ProfilesCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ProfilesCommand::Show { file, json } => {
            let set = ProfileSet::load(&file)?;
            if json {
                println!("{}", set.to_json());
            } else {
                print!("{}", render_table(&set));
            }
        }
        ProfilesCommand::Set {
            file,
            baseline_rps,
            stress,
            weights,
        } => {
            let mut set = ProfileSet::load(&file)?;
            if let Some(r) = baseline_rps {
                if !(r.is_finite() && r >= 0.0) {
                    bail!("--baseline-rps {r}: expected a number >= 0");
                }
                set.baseline_rps = r;
            }
            if let Some(s) = stress {
                if !(s.is_finite() && s >= 0.0) {
                    bail!("--stress {s}: expected a number >= 0");
                }
                set.stress = s;
            }
            for w in &weights {
                let (key, value) = w
                    .rsplit_once('=')
                    .with_context(|| format!("--weight {w:?}: expected PROFILE=WEIGHT"))?;
                let Some(i) = set
                    .profiles
                    .iter()
                    .position(|p| p.id == key || p.name == key)
                else {
                    let ids: Vec<&str> = set.profiles.iter().map(|p| p.id.as_str()).collect();
                    bail!(
                        "--weight {w:?}: no profile {key:?} in {} (ids: {})",
                        file.display(),
                        ids.join(", ")
                    );
                };
                set.profiles[i].weight = if value == "learned" {
                    None
                } else {
                    let v: f64 = value
                        .parse()
                        .ok()
                        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
                        .with_context(|| {
                            format!("--weight {w:?}: {value:?} is not a number >= 0")
                        })?;
                    Some(v)
                };
            }
            set.validate()
                .map_err(|m| anyhow::anyhow!("{}: {m}", file.display()))?;
            write_set(&file, &set)?;
            print!("{}", render_table(&set));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A rate with enough digits to be read at any size: 1234, 12.3, 0.0417.
fn rate_text(r: f64) -> String {
    if r >= 100.0 || r == 0.0 {
        format!("{r:.0}")
    } else if r >= 1.0 {
        format!("{r:.2}")
    } else {
        format!("{r:.3}")
    }
}

/// Cuts a long name at a character boundary, with an ellipsis.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max - 1).collect();
        out.push('…');
        out
    }
}

fn human_bytes(b: f64) -> String {
    if b < 1024.0 {
        format!("{b:.0} B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{:.1} MiB", b / 1024.0 / 1024.0)
    }
}

/// The set as a table, with a header line giving the volume.
pub fn render_table(set: &ProfileSet) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "id",
        "profile",
        "share",
        "mix",
        "req/s",
        "templates",
        "resp p50",
        "latency p50",
    ]);
    let rate = set.target_rps();
    for (p, mix) in set.mix() {
        let resp: f64 = p
            .templates
            .iter()
            .map(|t| t.weight * t.response_bytes.p50)
            .sum();
        let lat: Option<f64> = p
            .templates
            .iter()
            .map(|t| t.latency_ms.map(|q| q.p50 * t.weight))
            .sum::<Option<f64>>();
        t.add_row(vec![
            Cell::new(&p.id),
            Cell::new(shorten(&p.name, 80)),
            Cell::new(format!("{:.1}%", p.share * 100.0)).set_alignment(CellAlignment::Right),
            Cell::new(match p.weight {
                Some(_) => format!("{:.1}%*", mix * 100.0),
                None => format!("{:.1}%", mix * 100.0),
            })
            .set_alignment(CellAlignment::Right),
            Cell::new(rate_text(rate * mix)).set_alignment(CellAlignment::Right),
            Cell::new(p.templates.len()).set_alignment(CellAlignment::Right),
            Cell::new(human_bytes(resp)).set_alignment(CellAlignment::Right),
            Cell::new(lat.map_or("-".to_string(), |l| format!("{l:.1} ms")))
                .set_alignment(CellAlignment::Right),
        ]);
    }
    let records: u64 = set.sources.iter().map(|s| s.records).sum();
    format!(
        "{} profile{} from {} requests; baseline {} req/s × stress {} = {} req/s (* = user weight)\n{t}\n",
        set.profiles.len(),
        if set.profiles.len() == 1 { "" } else { "s" },
        records,
        rate_text(set.baseline_rps),
        set.stress,
        rate_text(rate)
    )
}
