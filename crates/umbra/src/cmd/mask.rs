//! `umbra mask`: what a raw HTTP/1.1 request becomes under the masking rules.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use clap::Args;
use umbra_mask::{MaskConfig, MaskReport, Masker, SecretSource, raw};

/// Show what a request becomes under the masking rules.
///
/// Reads one raw HTTP/1.1 request (a file, or `-` for standard input), masks it
/// the way `umbra proxy` masks shadow copies, with the [mask] table of --config
/// (other tables of the file are ignored) or the safe defaults, and prints the
/// masked request as raw HTTP/1.1 on standard output. A summary of what was masked,
/// per rule and detector, goes to standard error. For people writing rules, and
/// for audits.
///
/// `hash` and `preserve` are keyed with the secret in the environment variable
/// named by mask.secret_env (UMBRA_MASK_SECRET unless configured): set it to the
/// proxy's secret to see the proxy's tokens. Unset, a random key is used and
/// tokens change from run to run.
///
/// A chunked body is printed whole, with Content-Length (trailers are dropped).
///
/// Exit codes: 0 printed (masked, or without its body when on_failure =
/// "strip_body"), 1 error (unreadable input or config), 2 bad arguments, 3 the
/// proxy would drop this copy (nothing is printed but the reason).
#[derive(Args)]
pub struct MaskArgs {
    /// The request: a file holding raw HTTP/1.1, or `-` for standard input.
    #[arg(value_name = "FILE", default_value = "-")]
    input: String,
    /// Config file whose [mask] table holds the rules (default: the safe defaults).
    #[arg(short, long, value_name = "umbra.toml")]
    config: Option<PathBuf>,
    /// Print a JSON report on standard output instead of the request: outcome,
    /// values masked per rule, the secret's source, and the masked request.
    #[arg(long)]
    json: bool,
    /// Also write the masked request, byte for byte, to this file.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Exit code when the proxy would not send the copy.
const DROPPED: u8 = 3;

pub fn run(args: MaskArgs) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("{}: cannot read", path.display()))?;
            MaskConfig::from_toml(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?
        }
        None => MaskConfig::default(),
    };
    let config_name = args.config.as_ref().map_or_else(
        || "the default [mask] rules".to_string(),
        |p| p.display().to_string(),
    );
    let masker = Masker::new(&config).map_err(|e| anyhow!("{config_name}: {e}"))?;

    let (name, bytes) = read_input(&args.input)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(anyhow!(
            "{name}: empty input: expected a raw HTTP/1.1 request"
        ));
    }
    let mut request = raw::parse(&bytes).map_err(|e| anyhow!("{name}: {e}"))?;
    let outcome = masker.mask(&mut request.request);
    let masked = outcome.as_ref().ok().map(|_| request.write());

    if let (Some(path), Some(bytes)) = (&args.output, &masked) {
        std::fs::write(path, bytes).with_context(|| format!("{}: cannot write", path.display()))?;
    }
    if args.json {
        print_json(&name, &masker, &outcome, masked.as_deref(), &request)?;
    } else {
        if let Some(bytes) = &masked {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes)
                .and_then(|()| out.flush())
                .context("writing the masked request")?;
        }
        print_summary(&name, &masker, &outcome, &request);
    }
    Ok(match outcome {
        Ok(_) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(DROPPED),
    })
}

fn read_input(input: &str) -> anyhow::Result<(String, Vec<u8>)> {
    if input == "-" {
        let mut b = Vec::new();
        std::io::stdin()
            .lock()
            .read_to_end(&mut b)
            .context("reading standard input")?;
        Ok(("standard input".into(), b))
    } else {
        let b = std::fs::read(input).with_context(|| format!("{input}: cannot read"))?;
        Ok((input.to_string(), b))
    }
}

fn masked_list(report: &MaskReport) -> String {
    report
        .masked()
        .iter()
        .map(|(n, c)| format!("{n} {c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_summary(
    name: &str,
    masker: &Masker,
    outcome: &Result<MaskReport, umbra_mask::Dropped>,
    request: &raw::RawRequest,
) {
    if let SecretSource::Random { var } = masker.secret_source() {
        eprintln!(
            "note: {var} is not set: hash and preserve use a random key, so tokens differ from run to run and from the proxy's"
        );
    }
    if request.dechunked {
        let trailers = match request.trailers_dropped {
            0 => String::new(),
            n => format!(
                ", {n} trailer field{} dropped",
                if n == 1 { "" } else { "s" }
            ),
        };
        eprintln!("note: the chunked body is printed whole with Content-Length{trailers}");
    }
    match outcome {
        Ok(report) if report.total() == 0 => eprintln!("{name}: nothing to mask"),
        Ok(report) => eprintln!(
            "{name}: masked {} value{}: {}",
            report.total(),
            if report.total() == 1 { "" } else { "s" },
            masked_list(report)
        ),
        Err(reason) => eprintln!(
            "{name}: dropped ({}): {reason}; the proxy would not send this copy",
            reason.as_str()
        ),
    }
    if let Ok(Some(reason)) = outcome.as_ref().map(MaskReport::body_stripped) {
        eprintln!(
            "{name}: body removed ({}): {reason} (on_failure = \"strip_body\")",
            reason.as_str()
        );
    }
}

fn print_json(
    name: &str,
    masker: &Masker,
    outcome: &Result<MaskReport, umbra_mask::Dropped>,
    masked: Option<&[u8]>,
    request: &raw::RawRequest,
) -> anyhow::Result<()> {
    let reason = |d: &umbra_mask::Dropped| serde_json::json!({ "label": d.as_str(), "message": d.to_string() });
    let (state, reason, counts, total) = match outcome {
        Ok(r) => {
            let counts: serde_json::Map<String, serde_json::Value> = r
                .masked()
                .iter()
                .map(|(n, c)| (n.to_string(), (*c).into()))
                .collect();
            match r.body_stripped() {
                Some(d) => ("body_stripped", reason(d), counts, r.total()),
                None => ("masked", serde_json::Value::Null, counts, r.total()),
            }
        }
        Err(d) => ("dropped", reason(d), serde_json::Map::new(), 0),
    };
    let secret = match masker.secret_source() {
        SecretSource::Env { var, bytes } => {
            serde_json::json!({ "source": "env", "variable": var, "bytes": bytes })
        }
        SecretSource::Random { var } => serde_json::json!({ "source": "random", "variable": var }),
        SecretSource::Given => serde_json::json!({ "source": "given" }),
    };
    let out = serde_json::json!({
        "input": name,
        "outcome": state,
        "reason": reason,
        "masked": counts,
        "total": total,
        "secret": secret,
        "dechunked": request.dechunked,
        "trailers_dropped": request.trailers_dropped,
        // Lossy only for bodies that are not UTF-8; --output has the exact bytes.
        "request": masked.map(|b| String::from_utf8_lossy(b).into_owned()),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
