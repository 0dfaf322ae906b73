//! Reading access logs and HAR files into [`RequestRecord`]s.
//!
//! [`read_source`] opens a file (or stdin as `-`), undoes gzip if the content is
//! gzip (by its magic bytes, not its name), skips a byte-order mark, works out
//! the format if asked to ([`detect`]), and hands every record to a callback.
//! Lines that cannot be read are counted and the first few kept with their
//! line numbers and reasons; they never stop the reading. Whether there were
//! too many of them is the caller's call, with a [`BadBound`].
//!
//! One submodule per format: `combined` (also common), `nginx` (any
//! `log_format`), `jsonl` and `har`; `time` parses timestamps and `field`
//! holds what the line formats share.

mod combined;
mod field;
mod har;
mod jsonl;
mod nginx;
mod time;

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::ops::Range;
use std::str::FromStr;

use flate2::read::MultiGzDecoder;
use memchr::memchr;
use umbra_core::RequestRecord;

pub use jsonl::JsonMapping;
pub use nginx::NginxFormat;

/// A log format, as named on the command line.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Format {
    /// Work it out from the first lines (see [`detect`]).
    #[default]
    Auto,
    /// NCSA combined (Apache, nginx's default), with any trailing extras.
    Combined,
    /// NCSA common: combined without referer and user agent.
    Common,
    /// Lines written by an nginx `log_format`.
    Nginx(NginxFormat),
    /// One JSON object per line.
    JsonLines(JsonMapping),
    /// A HAR 1.2 document.
    Har,
}

impl Format {
    /// The format as it would be written on the command line.
    pub fn describe(&self) -> String {
        match self {
            Format::Auto => "auto".into(),
            Format::Combined => "combined".into(),
            Format::Common => "common".into(),
            Format::Nginx(f) => format!("nginx:{f}"),
            Format::JsonLines(m) if m.is_default() => "jsonl".into(),
            Format::JsonLines(m) => format!("jsonl:{m}"),
            Format::Har => "har".into(),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl FromStr for Format {
    type Err = String;

    /// `auto`, `combined`, `common`, `har`, `jsonl`, `jsonl:field=path,...` or
    /// `nginx:<log_format>`. Errors name the problem and, inside a
    /// `log_format` or mapping, its column in `s`.
    fn from_str(s: &str) -> Result<Format, String> {
        let (kind, rest) = match s.split_once(':') {
            Some((k, r)) => (k, Some(r)),
            None => (s, None),
        };
        // Columns inside the options count from the start of `s`.
        let offset = kind.chars().count() + 1;
        let in_format = |e: String| format!("log format `{s}`: {e}");
        match (kind.trim().to_ascii_lowercase().as_str(), rest) {
            ("auto", None) => Ok(Format::Auto),
            ("combined", None) => Ok(Format::Combined),
            ("common", None) => Ok(Format::Common),
            ("har", None) => Ok(Format::Har),
            ("jsonl", None) => Ok(Format::JsonLines(JsonMapping::default())),
            ("jsonl", Some(spec)) => JsonMapping::parse_at(spec, offset)
                .map(Format::JsonLines)
                .map_err(in_format),
            ("nginx", Some(spec)) => NginxFormat::parse_at(spec, offset)
                .map(Format::Nginx)
                .map_err(in_format),
            ("nginx", None) => Err("log format `nginx` needs the log_format after a colon: \
                 nginx:'$remote_addr - $remote_user [$time_local] \"$request\" ...'"
                .into()),
            ("auto" | "combined" | "common" | "har", Some(_)) => Err(format!(
                "log format `{s}`: `{kind}` takes nothing after `:` (at column {offset})"
            )),
            _ => Err(format!(
                "unknown log format `{s}`: expected auto, combined, common, \
                 nginx:'<log_format>', jsonl, jsonl:<field>=<json.path>,... or har"
            )),
        }
    }
}

/// Whether a [`BadLine`] is a line of a log or an entry of a HAR file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// `line` is a 1-based line number.
    Line,
    /// `line` is a 0-based index into `log.entries`.
    HarEntry,
}

/// An input line (or HAR entry) that gave no record, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct BadLine {
    pub source: String,
    pub line: u64,
    pub reason: String,
    pub position: Position,
}

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Position::Line => write!(f, "{} line {}: {}", self.source, self.line, self.reason),
            Position::HarEntry => write!(
                f,
                "{} log.entries[{}]: {}",
                self.source, self.line, self.reason
            ),
        }
    }
}

/// What reading one source gave.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceReport {
    pub name: String,
    /// The format actually used (the detected one when asked for `auto`).
    pub format: Format,
    /// Whether `format` was detected rather than given.
    pub detected: bool,
    pub records: u64,
    pub bad: u64,
    /// The first [`SourceReport::KEPT_BAD`] bad lines.
    pub first_bad: Vec<BadLine>,
    /// The earliest and latest request timestamps seen (ms since the epoch).
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
}

impl SourceReport {
    /// How many bad lines are kept with their reasons.
    pub const KEPT_BAD: usize = 5;

    /// What a profile set records about this input.
    pub fn summary(&self) -> umbra_core::SourceSummary {
        umbra_core::SourceSummary {
            name: self.name.clone(),
            format: self.format.describe(),
            records: self.records,
            bad: self.bad,
            first_ms: self.first_ms,
            last_ms: self.last_ms,
        }
    }
}

/// Why a source could not be read at all.
///
/// I/O errors are carried in the `error` fields and written into the message
/// rather than exposed as `source()`, so that printing the error alone says
/// everything and printing its chain does not say it twice.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{name}: {error}")]
    Io { name: String, error: io::Error },
    #[error("{name}: corrupt gzip data after line {line}: {error}")]
    Gzip {
        name: String,
        /// Lines read before the corruption.
        line: u64,
        error: io::Error,
    },
    #[error("{name}: no requests found (empty input)")]
    Empty { name: String },
    #[error(
        "{name}: cannot tell the log format: none of {tried} reads at least half of the first \
         {lines} lines; the first is `{first_line}`. Name the format: combined, common, \
         nginx:'<log_format>', jsonl:<field>=<json.path>,... or har"
    )]
    UnknownFormat {
        name: String,
        /// The first non-blank line, shortened and made printable.
        first_line: String,
        /// How many lines detection looked at.
        lines: usize,
        /// Each format tried, with how many lines it read and its first complaint.
        tried: String,
    },
    #[error("{name} line {line} column {column}: not a HAR file: invalid JSON: {message}")]
    HarJson {
        name: String,
        line: u64,
        column: u64,
        message: String,
    },
    #[error("{name}: not a HAR file: {reason}")]
    HarShape { name: String, reason: String },
    #[error("format {format} is read as a whole, not line by line")]
    NotLineFormat { format: String },
}

/// How many bad lines a source may have before the caller should give up on it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BadBound {
    /// A percentage (0–100) of all lines that were not blank.
    Percent(f64),
    /// An absolute number of lines.
    Count(u64),
}

impl Default for BadBound {
    fn default() -> Self {
        BadBound::Percent(5.0)
    }
}

impl BadBound {
    /// Whether `bad` bad lines next to `records` good ones is more than allowed.
    pub fn exceeded(&self, records: u64, bad: u64) -> bool {
        match *self {
            BadBound::Percent(p) => {
                let total = records + bad;
                total > 0 && (bad as f64) * 100.0 > p * total as f64
            }
            BadBound::Count(n) => bad > n,
        }
    }
}

impl FromStr for BadBound {
    type Err = String;

    /// `5%` (a share of the lines) or `100` (a number of lines).
    fn from_str(s: &str) -> Result<BadBound, String> {
        let t = s.trim();
        let bad = || {
            format!("bad-line bound `{s}`: expected a percentage like `5%` or a count like `100`")
        };
        if let Some(p) = t.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(0.0..=100.0).contains(&p) {
                return Err(format!(
                    "bad-line bound `{s}`: a percentage is between 0% and 100%"
                ));
            }
            Ok(BadBound::Percent(p))
        } else {
            t.parse().map(BadBound::Count).map_err(|_| bad())
        }
    }
}

impl fmt::Display for BadBound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadBound::Percent(p) => write!(f, "{p}%"),
            BadBound::Count(n) => write!(f, "{n}"),
        }
    }
}

/// Parses one line of a line-based format.
pub trait LineParser: Send {
    /// A record, `Ok(None)` for a blank or `#` comment line, or why the line
    /// cannot be read. The line may still end in `\n` or `\r\n`.
    fn parse(&mut self, line: &[u8]) -> Result<Option<RequestRecord>, String>;
}

/// A parser for a line-based format (all but [`Format::Auto`] and [`Format::Har`]).
pub fn line_parser(format: &Format) -> Result<Box<dyn LineParser>, ReadError> {
    Ok(match format {
        Format::Combined => Box::new(combined::CombinedParser::new(true)),
        Format::Common => Box::new(combined::CombinedParser::new(false)),
        Format::Nginx(f) => Box::new(nginx::NginxParser::new(f)),
        Format::JsonLines(m) => Box::new(jsonl::JsonParser::new(m)),
        Format::Auto | Format::Har => {
            return Err(ReadError::NotLineFormat {
                format: format.describe(),
            });
        }
    })
}

/// How many non-blank lines [`detect`] looks at.
const DETECT_LINES: usize = 20;

/// Works out the format of a source from its first lines.
///
/// A document opening with `{"log": {` is HAR. Otherwise up to the first 20
/// non-blank lines are tried as JSON lines (only if one starts with `{`), then
/// combined, then common; the format that reads the most of them wins, the
/// earlier one on a tie. If none reads at least half, the format is unknown.
pub fn detect(name: &str, first_lines: &[&[u8]]) -> Result<Format, ReadError> {
    let mut head = Vec::new();
    for l in first_lines {
        if head.len() >= 4096 {
            break;
        }
        head.extend_from_slice(l);
        head.push(b'\n');
    }
    if looks_like_har(&head) {
        return Ok(Format::Har);
    }
    let lines: Vec<&[u8]> = first_lines
        .iter()
        .filter_map(|l| field::content(l))
        .take(DETECT_LINES)
        .collect();
    let Some(first) = lines.first() else {
        return Err(ReadError::Empty { name: name.into() });
    };
    let mut candidates = Vec::new();
    if lines.iter().any(|l| l.starts_with(b"{")) {
        candidates.push(Format::JsonLines(JsonMapping::default()));
    }
    candidates.extend([Format::Combined, Format::Common]);

    let mut best: Option<(usize, &Format)> = None;
    let mut tried = Vec::new();
    for format in &candidates {
        let mut parser = line_parser(format)?;
        let mut read = 0;
        let mut complaint = None;
        for (i, line) in lines.iter().enumerate() {
            match parser.parse(line) {
                Ok(Some(_)) => read += 1,
                Ok(None) => {}
                Err(e) => {
                    complaint.get_or_insert_with(|| format!("; line {}: {e}", i + 1));
                }
            }
        }
        if best.is_none_or(|(n, _)| read > n) {
            best = Some((read, format));
        }
        tried.push(format!(
            "{} ({read} of {}{})",
            format.describe(),
            lines.len(),
            complaint.unwrap_or_default()
        ));
    }
    match best {
        Some((n, format)) if n > 0 && n * 2 >= lines.len() => Ok(format.clone()),
        _ => Err(ReadError::UnknownFormat {
            name: name.into(),
            first_line: field::shown(first),
            lines: lines.len(),
            tried: tried.join(", "),
        }),
    }
}

/// Whether the bytes open a HAR document: `{`, then `"log"` as the first key,
/// with anything but a string after it (Docker's JSON logs open with
/// `{"log":"...`). A broken HAR file is still taken as HAR, so that the error
/// says where its JSON breaks.
fn looks_like_har(b: &[u8]) -> bool {
    let mut b = field::strip_bom(b).trim_ascii_start();
    for expected in [&b"{"[..], b"\"log\"", b":"] {
        match b.strip_prefix(expected) {
            Some(rest) => b = rest.trim_ascii_start(),
            None => return false,
        }
    }
    b.first().is_some_and(|&c| c != b'"')
}

/// Reads one source, passing each record to `on_record` as it is read.
///
/// `name` is a file path, or `-` for stdin. Gzip is recognised by its magic
/// bytes. Bad lines are counted in the report and do not stop the reading;
/// a source with neither records nor bad lines is [`ReadError::Empty`].
pub fn read_source(
    name: &str,
    format: &Format,
    on_record: &mut dyn FnMut(RequestRecord),
) -> Result<SourceReport, ReadError> {
    let mut input = Input::open(name)?;
    let mut tally = Tally::new(name);
    let (format, detected) = match format {
        Format::Har => {
            read_har(&mut input, Vec::new(), &mut tally, on_record)?;
            (Format::Har, false)
        }
        Format::Auto => (detect_and_read(&mut input, &mut tally, on_record)?, true),
        line_format => {
            let mut parser = line_parser(line_format)?;
            read_lines(&mut input, &mut *parser, &mut tally, on_record)?;
            (line_format.clone(), false)
        }
    };
    tally.finish(format, detected)
}

/// The `auto` path: sniff HAR from the first buffer, else buffer the first
/// lines, detect, replay them and carry on. Returns the format used.
fn detect_and_read(
    input: &mut Input,
    tally: &mut Tally,
    on_record: &mut dyn FnMut(RequestRecord),
) -> Result<Format, ReadError> {
    if looks_like_har(input.peek()?) {
        read_har(input, Vec::new(), tally, on_record)?;
        return Ok(Format::Har);
    }
    // Lines are kept in one buffer, as (line number, span, too long).
    let mut raw = Vec::new();
    let mut spans: Vec<(u64, Range<usize>, bool)> = Vec::new();
    let mut buf = Vec::new();
    let mut non_blank = 0;
    while non_blank < DETECT_LINES {
        let Some(too_long) = input.next_line(&mut buf)? else {
            break;
        };
        let start = raw.len();
        raw.extend_from_slice(&buf);
        spans.push((input.line, start..raw.len(), too_long));
        if too_long || field::content(&buf).is_some() {
            non_blank += 1;
        }
    }
    let lines: Vec<&[u8]> = spans
        .iter()
        .filter(|(_, _, too_long)| !too_long)
        .map(|(_, span, _)| &raw[span.clone()])
        .collect();
    let format = detect(&input.name, &lines)?;
    if format == Format::Har {
        read_har(input, raw, tally, on_record)?;
        return Ok(format);
    }
    let mut parser = line_parser(&format)?;
    for (number, span, too_long) in spans {
        tally.line(number, too_long, &raw[span], &mut *parser, on_record);
    }
    read_lines(input, &mut *parser, tally, on_record)?;
    Ok(format)
}

fn read_lines(
    input: &mut Input,
    parser: &mut dyn LineParser,
    tally: &mut Tally,
    on_record: &mut dyn FnMut(RequestRecord),
) -> Result<(), ReadError> {
    input.for_each_line(|number, line, too_long| {
        tally.line(number, too_long, line, parser, on_record);
    })
}

/// Reads a whole HAR document, `doc` holding what was already read of it.
fn read_har(
    input: &mut Input,
    mut doc: Vec<u8>,
    tally: &mut Tally,
    on_record: &mut dyn FnMut(RequestRecord),
) -> Result<(), ReadError> {
    input.read_rest(&mut doc)?;
    if field::strip_bom(&doc).trim_ascii().is_empty() {
        return Err(ReadError::Empty {
            name: input.name.clone(),
        });
    }
    let entries = har::entries(&doc).map_err(|e| match e {
        har::HarError::Json {
            line,
            column,
            message,
        } => ReadError::HarJson {
            name: input.name.clone(),
            line,
            column,
            message,
        },
        har::HarError::Shape(reason) => ReadError::HarShape {
            name: input.name.clone(),
            reason,
        },
    })?;
    for (i, entry) in entries.into_iter().enumerate() {
        match entry {
            Ok(record) => tally.record(record, on_record),
            Err(reason) => tally.bad(i as u64, Position::HarEntry, reason),
        }
    }
    Ok(())
}

/// Lines longer than this are bad lines rather than a way to exhaust memory.
const MAX_LINE: usize = 8 << 20;

/// An opened source: decompressed, buffered, counting its lines.
struct Input {
    name: String,
    reader: Box<dyn BufRead>,
    gzip: bool,
    /// Lines read so far.
    line: u64,
}

impl Input {
    fn open(name: &str) -> Result<Input, ReadError> {
        let io_error = |error| ReadError::Io {
            name: name.into(),
            error,
        };
        let mut raw: Box<dyn Read> = if name == "-" {
            Box::new(io::stdin().lock())
        } else {
            Box::new(File::open(name).map_err(io_error)?)
        };
        // Read the first two bytes ourselves (a pipe may deliver them apart)
        // and put them back in front.
        let mut magic = [0u8; 2];
        let mut got = 0;
        while got < magic.len() {
            match raw.read(&mut magic[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(e)),
            }
        }
        let whole = io::Cursor::new(magic[..got].to_vec()).chain(raw);
        let gzip = magic[..got] == [0x1f, 0x8b];
        let reader: Box<dyn BufRead> = if gzip {
            Box::new(BufReader::with_capacity(
                1 << 16,
                MultiGzDecoder::new(whole),
            ))
        } else {
            Box::new(BufReader::with_capacity(1 << 16, whole))
        };
        Ok(Input {
            name: name.into(),
            reader,
            gzip,
            line: 0,
        })
    }

    fn error(&self, error: io::Error) -> ReadError {
        use io::ErrorKind::{InvalidData, InvalidInput, UnexpectedEof};
        if self.gzip && matches!(error.kind(), InvalidData | InvalidInput | UnexpectedEof) {
            ReadError::Gzip {
                name: self.name.clone(),
                line: self.line,
                error,
            }
        } else {
            ReadError::Io {
                name: self.name.clone(),
                error,
            }
        }
    }

    /// The start of what is left, without consuming it.
    fn peek(&mut self) -> Result<&[u8], ReadError> {
        loop {
            match self.reader.fill_buf() {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.error(e)),
            }
        }
        self.reader.fill_buf().map_err(|e| ReadError::Io {
            name: self.name.clone(),
            error: e,
        })
    }

    /// Reads the next line (with its `\n`) into `buf`: `Some(too_long)`, or
    /// `None` at the end. A line over [`MAX_LINE`] is cut there and the rest of
    /// it skipped.
    fn next_line(&mut self, buf: &mut Vec<u8>) -> Result<Option<bool>, ReadError> {
        buf.clear();
        let mut too_long = false;
        let mut any = false;
        loop {
            let available = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.error(e)),
            };
            if available.is_empty() {
                if any {
                    self.line += 1;
                    return Ok(Some(too_long));
                }
                return Ok(None);
            }
            any = true;
            let (take, done) = match memchr(b'\n', available) {
                Some(i) => (i + 1, true),
                None => (available.len(), false),
            };
            if !too_long {
                if buf.len() + take <= MAX_LINE {
                    buf.extend_from_slice(&available[..take]);
                } else {
                    too_long = true;
                }
            }
            self.reader.consume(take);
            if done {
                self.line += 1;
                return Ok(Some(too_long));
            }
        }
    }

    /// Calls `f(line number, line, too long)` for each line left. Lines that
    /// lie whole in the reader's buffer are passed from there; only a line
    /// split between two fills is copied.
    fn for_each_line(&mut self, mut f: impl FnMut(u64, &[u8], bool)) -> Result<(), ReadError> {
        let mut partial = Vec::new();
        let mut too_long = false;
        loop {
            let available = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.error(e)),
            };
            if available.is_empty() {
                if !partial.is_empty() || too_long {
                    self.line += 1;
                    f(self.line, &partial, too_long);
                }
                return Ok(());
            }
            let mut start = 0;
            if !partial.is_empty() || too_long {
                // Finish the line begun in the previous fill.
                let end = memchr(b'\n', available).map_or(available.len(), |i| i + 1);
                append_capped(&mut partial, &available[..end], &mut too_long);
                if available[end - 1] == b'\n' {
                    self.line += 1;
                    f(self.line, &partial, too_long);
                    partial.clear();
                    too_long = false;
                }
                start = end;
            }
            while let Some(i) = memchr(b'\n', &available[start..]) {
                self.line += 1;
                f(self.line, &available[start..=start + i], false);
                start += i + 1;
            }
            append_capped(&mut partial, &available[start..], &mut too_long);
            let used = available.len();
            self.reader.consume(used);
        }
    }

    fn read_rest(&mut self, out: &mut Vec<u8>) -> Result<(), ReadError> {
        match self.reader.read_to_end(out) {
            Ok(_) => Ok(()),
            Err(e) => Err(self.error(e)),
        }
    }
}

/// Appends to a line being gathered, up to [`MAX_LINE`].
fn append_capped(line: &mut Vec<u8>, more: &[u8], too_long: &mut bool) {
    if *too_long {
        return;
    }
    if line.len() + more.len() > MAX_LINE {
        *too_long = true;
    } else {
        line.extend_from_slice(more);
    }
}

/// Counts as a source is read.
struct Tally {
    name: String,
    records: u64,
    bad: u64,
    first_bad: Vec<BadLine>,
    first_ms: Option<i64>,
    last_ms: Option<i64>,
}

impl Tally {
    fn new(name: &str) -> Tally {
        Tally {
            name: name.into(),
            records: 0,
            bad: 0,
            first_bad: Vec::new(),
            first_ms: None,
            last_ms: None,
        }
    }

    fn record(&mut self, record: RequestRecord, on_record: &mut dyn FnMut(RequestRecord)) {
        self.records += 1;
        if let Some(t) = record.timestamp_ms {
            self.first_ms = Some(self.first_ms.map_or(t, |f| f.min(t)));
            self.last_ms = Some(self.last_ms.map_or(t, |l| l.max(t)));
        }
        on_record(record);
    }

    fn bad(&mut self, line: u64, position: Position, reason: String) {
        self.bad += 1;
        if self.first_bad.len() < SourceReport::KEPT_BAD {
            self.first_bad.push(BadLine {
                source: self.name.clone(),
                line,
                reason,
                position,
            });
        }
    }

    fn line(
        &mut self,
        number: u64,
        too_long: bool,
        line: &[u8],
        parser: &mut dyn LineParser,
        on_record: &mut dyn FnMut(RequestRecord),
    ) {
        if too_long {
            let reason = format!("line is longer than {} MiB; skipped", MAX_LINE >> 20);
            return self.bad(number, Position::Line, reason);
        }
        match parser.parse(line) {
            Ok(Some(record)) => self.record(record, on_record),
            Ok(None) => {}
            Err(reason) => self.bad(number, Position::Line, reason),
        }
    }

    fn finish(self, format: Format, detected: bool) -> Result<SourceReport, ReadError> {
        if self.records == 0 && self.bad == 0 {
            return Err(ReadError::Empty { name: self.name });
        }
        Ok(SourceReport {
            name: self.name,
            format,
            detected,
            records: self.records,
            bad: self.bad,
            first_bad: self.first_bad,
            first_ms: self.first_ms,
            last_ms: self.last_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::PathBuf;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    const LINE: &str = r#"66.249.66.194 - - [22/Jan/2019:03:56:20 +0330] "GET /filter/b41,b665?page=2 HTTP/1.1" 200 34277 "-" "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)" "-""#;

    /// A file in the temp directory, removed when dropped.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(tag: &str, contents: &[u8]) -> TempFile {
            let path = std::env::temp_dir().join(format!(
                "umbra-read-{}-{tag}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::write(&path, contents).expect("write temp file");
            TempFile(path)
        }

        fn name(&self) -> &str {
            self.0.to_str().expect("utf-8 temp path")
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(data).expect("compress");
        enc.finish().expect("compress")
    }

    fn read(name: &str, format: &Format) -> Result<(SourceReport, Vec<RequestRecord>), ReadError> {
        let mut records = Vec::new();
        let report = read_source(name, format, &mut |r| records.push(r))?;
        Ok((report, records))
    }

    #[test]
    fn gzip_input_with_bom_is_read() {
        let mut text = b"\xEF\xBB\xBF".to_vec();
        for _ in 0..3 {
            text.extend_from_slice(LINE.as_bytes());
            text.extend_from_slice(b"\r\n");
        }
        let file = TempFile::new("gz", &gzip(&text));
        let (report, records) = read(file.name(), &Format::Auto).expect("readable");
        assert_eq!(report.format, Format::Combined);
        assert!(report.detected);
        assert_eq!((report.records, report.bad), (3, 0));
        assert_eq!(records[0].client.as_deref(), Some("66.249.66.194"));
        assert_eq!(records[2].query.as_deref(), Some("page=2"));
        assert_eq!(report.first_ms, Some(1_548_116_780_000));
        assert_eq!(report.last_ms, report.first_ms);

        // Concatenated gzip members (as `cat a.gz b.gz` makes) are all read.
        let mut two = gzip(format!("{LINE}\n").as_bytes());
        two.extend(gzip(format!("{LINE}\n").as_bytes()));
        let file = TempFile::new("gz2", &two);
        let (report, _) = read(file.name(), &Format::Combined).expect("readable");
        assert_eq!(report.records, 2);
    }

    #[test]
    fn corrupt_gzip_is_an_error() {
        let mut data = gzip(format!("{LINE}\n").repeat(200).as_bytes());
        let n = data.len();
        data[n / 2] ^= 0xff;
        data[n / 2 + 1] ^= 0x55;
        let file = TempFile::new("badgz", &data);
        let err = read(file.name(), &Format::Combined).expect_err("corrupt");
        assert!(matches!(err, ReadError::Gzip { .. }), "{err}");
        assert!(err.to_string().contains("corrupt gzip data"), "{err}");

        let truncated = gzip(format!("{LINE}\n").repeat(200).as_bytes());
        let file = TempFile::new("cutgz", &truncated[..truncated.len() / 2]);
        let err = read(file.name(), &Format::Combined).expect_err("truncated");
        assert!(matches!(err, ReadError::Gzip { .. }), "{err}");
    }

    #[test]
    fn bad_lines_are_counted_and_the_first_five_kept() {
        let mut text = String::new();
        for i in 0..10 {
            text.push_str(LINE);
            text.push('\n');
            if i % 2 == 0 {
                text.push_str("1.2.3.4 - - [22/Jan/2019:03:56:20 +0330] \"\\x16\\x03\\x01\" 400 0 \"-\" \"-\"\n\n");
            }
        }
        let file = TempFile::new("bad", text.as_bytes());
        let (report, records) = read(file.name(), &Format::Auto).expect("readable");
        assert_eq!(report.format, Format::Combined);
        assert_eq!((report.records, report.bad), (10, 5));
        assert_eq!(records.len(), 10);
        assert_eq!(report.first_bad.len(), 5);
        assert_eq!(report.first_bad[0].line, 2);
        assert_eq!(report.first_bad[1].line, 6);
        let shown = report.first_bad[0].to_string();
        assert!(
            shown.starts_with(&format!("{} line 2: request line", file.name())),
            "{shown}"
        );
        assert!(!BadBound::Percent(50.0).exceeded(report.records, report.bad));
        assert!(BadBound::default().exceeded(report.records, report.bad));
    }

    #[test]
    fn empty_and_missing_inputs() {
        let file = TempFile::new("empty", b"\n  \n# nothing\n");
        let err = read(file.name(), &Format::Auto).expect_err("empty");
        assert_eq!(
            err.to_string(),
            format!("{}: no requests found (empty input)", file.name())
        );
        let err = read(file.name(), &Format::Combined).expect_err("empty");
        assert!(matches!(err, ReadError::Empty { .. }));
        let file = TempFile::new("zero", b"");
        let err = read(file.name(), &Format::Har).expect_err("empty");
        assert!(matches!(err, ReadError::Empty { .. }));

        let err = read("/nonexistent/access.log", &Format::Auto).expect_err("missing");
        assert!(
            err.to_string().starts_with("/nonexistent/access.log: "),
            "{err}"
        );
    }

    #[test]
    fn unknown_format_says_what_was_tried() {
        let file = TempFile::new(
            "unknown",
            b"Jan 22 03:56:14 host sshd[1]: Accepted key\nJan 22 03:56:15 host sshd[1]: closed\n",
        );
        let err = read(file.name(), &Format::Auto).expect_err("not a log we know");
        let msg = err.to_string();
        assert!(matches!(err, ReadError::UnknownFormat { .. }));
        assert!(
            msg.contains("`Jan 22 03:56:14 host sshd[1]: Accepted key`"),
            "{msg}"
        );
        assert!(msg.contains("combined (0 of 2; line 1: "), "{msg}");
        assert!(msg.contains("common (0 of 2"), "{msg}");
    }

    #[test]
    fn detection_picks_the_format_that_reads_most() {
        let common =
            br#"127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /a.gif HTTP/1.0" 200 2326"#;
        let combined = LINE.as_bytes();
        let json = br#"{"method":"GET","path":"/x","status":200}"#;
        assert_eq!(detect("t", &[common, common]).ok(), Some(Format::Common));
        assert_eq!(
            detect("t", &[combined, common]).ok(),
            Some(Format::Combined)
        );
        assert_eq!(
            detect("t", &[combined, common, common]).ok(),
            Some(Format::Common)
        );
        assert_eq!(
            detect("t", &[b"", json, json]).ok(),
            Some(Format::JsonLines(JsonMapping::default()))
        );
        assert_eq!(
            detect("t", &[b"{", b"  \"log\": {"]).ok(),
            Some(Format::Har)
        );
        // Docker's JSON log lines also open with "log", but are not HAR.
        assert!(matches!(
            detect("t", &[br#"{"log":"hello\n","stream":"stdout"}"#]),
            Err(ReadError::UnknownFormat { .. })
        ));
        assert!(matches!(
            detect("t", &[b"", b"  "]),
            Err(ReadError::Empty { .. })
        ));
    }

    #[test]
    fn format_names_round_trip() {
        for s in [
            "auto",
            "combined",
            "common",
            "har",
            "jsonl",
            "jsonl:method=verb,path=request_uri,status=code",
            "nginx:'$remote_addr [$time_local] \"$request\" $status $request_time'",
        ] {
            let f: Format = s.parse().expect(s);
            assert_eq!(f.describe(), s);
            assert_eq!(f.to_string().parse::<Format>().as_ref(), Ok(&f));
        }
        // An unquoted nginx format reads the same as the quoted form.
        let bare: Format = "nginx:$remote_addr \"$request\" $status"
            .parse()
            .expect("bare");
        assert_eq!(bare.describe(), "nginx:'$remote_addr \"$request\" $status'");
    }

    #[test]
    fn format_errors_name_the_problem_and_position() {
        let err = |s: &str| s.parse::<Format>().expect_err(s);
        assert!(err("apache").contains("unknown log format `apache`"));
        assert!(err("nginx").contains("needs the log_format"));
        assert!(err("combined:x").contains("takes nothing"));
        let e = err("nginx:$remote_addr \"$request\" ${status");
        assert!(e.contains("at column 31"), "{e}");
        let e = err("jsonl:method=verb,pth=uri");
        assert!(e.contains("at column 19: unknown field `pth`"), "{e}");
        let e = err("nginx:$remote_addr $status");
        assert!(e.contains("no $request"), "{e}");
    }

    #[test]
    fn bad_bounds() {
        assert_eq!("5%".parse(), Ok(BadBound::Percent(5.0)));
        assert_eq!(" 0.5 %".parse(), Ok(BadBound::Percent(0.5)));
        assert_eq!("100".parse(), Ok(BadBound::Count(100)));
        assert!("101%".parse::<BadBound>().is_err());
        assert!("lots".parse::<BadBound>().is_err());
        assert!("-1".parse::<BadBound>().is_err());
        assert_eq!(BadBound::default().to_string(), "5%");
        assert_eq!(BadBound::Count(3).to_string(), "3");
        let b = BadBound::Percent(5.0);
        assert!(!b.exceeded(95, 5));
        assert!(b.exceeded(94, 6));
        assert!(!b.exceeded(0, 0));
        assert!(BadBound::Count(0).exceeded(1000, 1));
        assert!(!BadBound::Count(1).exceeded(0, 1));
    }

    #[test]
    fn line_parser_is_only_for_line_formats() {
        assert!(line_parser(&Format::Combined).is_ok());
        assert!(matches!(
            line_parser(&Format::Har),
            Err(ReadError::NotLineFormat { .. })
        ));
        assert!(matches!(
            line_parser(&Format::Auto),
            Err(ReadError::NotLineFormat { .. })
        ));
    }

    #[test]
    fn lines_across_buffer_fills_and_without_final_newline() {
        // About 1 MB: lines cross the 64 KiB buffer boundaries many times.
        let mut text = format!("{LINE}\r\n").repeat(4000);
        text.push_str(LINE);
        let file = TempFile::new("fills", text.as_bytes());
        for format in [Format::Combined, Format::Auto] {
            let (report, records) = read(file.name(), &format).expect("readable");
            assert_eq!((report.records, report.bad), (4001, 0));
            assert!(
                records
                    .iter()
                    .all(|r| r.user_agent == records[0].user_agent)
            );
        }
    }

    #[test]
    fn overlong_lines_are_bad_not_fatal() {
        let mut text = format!("{LINE}\n").into_bytes();
        text.extend(std::iter::repeat_n(b'a', MAX_LINE + 10));
        text.push(b'\n');
        text.extend_from_slice(format!("{LINE}\n").as_bytes());
        let file = TempFile::new("long", &text);
        let (report, _) = read(file.name(), &Format::Combined).expect("readable");
        assert_eq!((report.records, report.bad), (2, 1));
        assert_eq!(report.first_bad[0].line, 2);
        assert!(report.first_bad[0].reason.contains("longer than 8 MiB"));
    }

    #[test]
    fn single_line_har_is_detected() {
        let doc = br#"{"log":{"version":"1.2","entries":[{"request":{"method":"GET","url":"http://h/a"},"response":{"status":200}},{"request":{}}]}}"#;
        let file = TempFile::new("har1", doc);
        let (report, records) = read(file.name(), &Format::Auto).expect("a HAR file");
        assert_eq!(report.format, Format::Har);
        assert_eq!((report.records, report.bad), (1, 1));
        assert_eq!(records[0].path, "/a");
        assert_eq!(
            report.first_bad[0].to_string(),
            format!("{} log.entries[1]: no `request.method`", file.name())
        );
    }
}
