//! JSON bodies: a streaming walk that validates the document, follows the JSONPath
//! rules, and rewrites only the tokens that change.
//!
//! Why not `serde_json::Value`: building a tree costs an allocation per node, loses
//! key order (without a workspace-wide feature) and number spelling, and rewrites
//! every byte. Here untouched bytes are copied in runs, a masked string is written
//! back escaped, a dropped member takes its comma with it, and a masked number
//! stays a number, so the copy is valid JSON with the same shape.
//!
//! Detectors run once over the whole body before the walk (one pass of the
//! trigger automaton instead of one call per string); a find counts when it lies
//! inside a string or number token. That is equivalent to scanning each token
//! alone because no built-in detector accepts a `"` or a backslash, so no find can
//! straddle a token. Strings with escapes are decoded and scanned on their own,
//! and user patterns (whose context is "one value") run per token.

use std::borrow::Cow;

use crate::ctx::Ctx;
use crate::detect::Found;
use crate::encode::{json_escape, json_unescape};
use crate::jsonpath::{Key, State, min_action};
use crate::rules::{Action, How};

/// Deeper documents are not masked field by field (the walk is recursive, and no
/// real API nests this deep): they fail like a parse error.
const MAX_DEPTH: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JsonError {
    pub at: usize,
    pub what: &'static str,
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "byte {}: {}", self.at, self.what)
    }
}

type R<T> = Result<T, JsonError>;

fn err<T>(at: usize, what: &'static str) -> R<T> {
    Err(JsonError { at, what })
}

/// Masks a JSON body (one value, or several in a row as in JSON lines). `None`
/// when nothing changed. `detect`: run the detectors over every string and number.
pub(crate) fn mask(cx: &mut Ctx<'_>, h: &[u8], detect: bool) -> R<Option<Vec<u8>>> {
    if let Err(e) = std::str::from_utf8(h) {
        return err(e.valid_up_to(), "not UTF-8");
    }
    let mut finds = Vec::new();
    if detect {
        cx.m.detectors.scan_builtin(h, &mut finds);
    }
    let mut w = Walker {
        cx,
        h,
        out: Vec::new(),
        copied: 0,
        finds,
        fi: 0,
        detect,
        tmp: Vec::new(),
        changed: false,
        pool: Vec::new(),
    };
    let mut p = if h.starts_with(b"\xEF\xBB\xBF") { 3 } else { 0 };
    let mut root = Vec::new();
    let root_rule = w.cx.m.json.root(&mut root);
    if root_rule.is_some_and(|a| a.how == How::Drop) {
        // `$` dropped: the copy goes without a body. Still only if it is JSON.
        w.skip_all(p)?;
        w.cx.count(root_rule.map_or(0, |a| a.id));
        return Ok(Some(Vec::new()));
    }
    p = w.ws(p);
    while p < h.len() {
        p = w.value(p, 0, &root, root_rule)?;
        p = w.ws(p);
    }
    if !w.changed {
        return Ok(None);
    }
    w.out.extend_from_slice(&h[w.copied..]);
    Ok(Some(w.out))
}

struct Walker<'c, 'm, 'h> {
    cx: &'c mut Ctx<'m>,
    h: &'h [u8],
    out: Vec<u8>,
    /// `h[..copied]` is reflected in `out`.
    copied: usize,
    /// Built-in finds over the whole body, by start.
    finds: Vec<Found>,
    fi: usize,
    detect: bool,
    tmp: Vec<u8>,
    changed: bool,
    /// State vectors for the levels being walked, reused (one allocation per depth).
    pool: Vec<Vec<State>>,
}

impl Walker<'_, '_, '_> {
    fn ws(&self, mut p: usize) -> usize {
        while p < self.h.len() && matches!(self.h[p], b' ' | b'\t' | b'\n' | b'\r') {
            p += 1;
        }
        p
    }

    fn skip_all(&self, p: usize) -> R<()> {
        let mut p = self.ws(p);
        while p < self.h.len() {
            p = self.skip(p, 0)?;
            p = self.ws(p);
        }
        Ok(())
    }

    /// Replaces `h[start..end]` with `with` in the output.
    fn replace(&mut self, start: usize, end: usize, with: &[u8]) {
        if self.out.capacity() == 0 {
            self.out.reserve(self.h.len() + 64);
        }
        self.out.extend_from_slice(&self.h[self.copied..start]);
        self.out.extend_from_slice(with);
        self.copied = end;
        self.changed = true;
    }

    /// Moves the output up to `start` and starts a replacement there; the caller
    /// appends to `self.out` and then sets `copied`.
    fn begin(&mut self, start: usize) {
        if self.out.capacity() == 0 {
            self.out.reserve(self.h.len() + 64);
        }
        self.out.extend_from_slice(&self.h[self.copied..start]);
        self.changed = true;
    }

    fn at(&self, p: usize) -> R<u8> {
        match self.h.get(p) {
            Some(&c) => Ok(c),
            None => err(p, "unexpected end of document"),
        }
    }

    /// End of the string starting at `p` (after its closing quote), and whether it
    /// holds escapes.
    fn string_end(&self, p: usize) -> R<(usize, bool)> {
        let h = self.h;
        let mut i = p + 1;
        let mut escaped = false;
        loop {
            let rest = &h[i.min(h.len())..];
            // Two vectorised passes (find the end, then check what was skipped)
            // beat one byte-at-a-time loop testing three conditions, even on
            // short strings (measured).
            let Some(off) = memchr::memchr2(b'"', b'\\', rest) else {
                return err(p, "unterminated string");
            };
            if let Some(bad) = rest[..off].iter().position(|&c| c < 0x20) {
                return err(i + bad, "control character in string");
            }
            i += off;
            match h[i] {
                b'"' => return Ok((i + 1, escaped)),
                b'\\' => {
                    escaped = true;
                    match h.get(i + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                        Some(b'u') => {
                            let hex = h.get(i + 2..i + 6);
                            if !hex.is_some_and(|w| w.iter().all(u8::is_ascii_hexdigit)) {
                                return err(i, "bad \\u escape");
                            }
                            i += 6;
                        }
                        _ => return err(i, "bad escape"),
                    }
                }
                _ => return err(i, "control character in string"),
            }
        }
    }

    fn number_end(&self, p: usize) -> R<usize> {
        let h = self.h;
        let digits = |mut i: usize| {
            let s = i;
            while i < h.len() && h[i].is_ascii_digit() {
                i += 1;
            }
            (i, i - s)
        };
        let mut i = p;
        if h.get(i) == Some(&b'-') {
            i += 1;
        }
        match h.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => i = digits(i).0,
            _ => return err(i, "bad number"),
        }
        if h.get(i) == Some(&b'.') {
            let (e, n) = digits(i + 1);
            if n == 0 {
                return err(i, "bad number: no digits after '.'");
            }
            i = e;
        }
        if matches!(h.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(h.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            let (e, n) = digits(i);
            if n == 0 {
                return err(i, "bad number: no digits in exponent");
            }
            i = e;
        }
        Ok(i)
    }

    fn literal(&self, p: usize) -> R<usize> {
        for lit in [&b"true"[..], b"false", b"null"] {
            if self.h[p..].starts_with(lit) {
                return Ok(p + lit.len());
            }
        }
        err(p, "unexpected character")
    }

    /// Validates the value at `p` without rewriting it (a dropped member).
    fn skip(&self, p: usize, depth: usize) -> R<usize> {
        if depth > MAX_DEPTH {
            return err(p, "nested too deep");
        }
        match self.at(p)? {
            b'"' => self.string_end(p).map(|(e, _)| e),
            b'-' | b'0'..=b'9' => self.number_end(p),
            b'{' | b'[' => {
                let close = if self.h[p] == b'{' { b'}' } else { b']' };
                let object = close == b'}';
                let mut q = self.ws(p + 1);
                if self.at(q)? == close {
                    return Ok(q + 1);
                }
                loop {
                    if object {
                        if self.at(q)? != b'"' {
                            return err(q, "expected a member name");
                        }
                        q = self.ws(self.string_end(q)?.0);
                        if self.at(q)? != b':' {
                            return err(q, "expected ':'");
                        }
                        q = self.ws(q + 1);
                    }
                    q = self.ws(self.skip(q, depth + 1)?);
                    match self.at(q)? {
                        b',' => q = self.ws(q + 1),
                        c if c == close => return Ok(q + 1),
                        _ => return err(q, "expected ',' or a closing bracket"),
                    }
                }
            }
            _ => self.literal(p),
        }
    }

    /// Built-in finds inside `a..b`; `Err(())` when one straddles the edge (then
    /// the token is rescanned on its own).
    fn finds_in(&mut self, a: usize, b: usize) -> Result<std::ops::Range<usize>, ()> {
        while self.fi < self.finds.len() && self.finds[self.fi].range.start < a {
            self.fi += 1;
        }
        let first = self.fi;
        while self.fi < self.finds.len() && self.finds[self.fi].range.start < b {
            self.fi += 1;
        }
        let r = first..self.fi;
        if self.finds[r.clone()].iter().any(|f| f.range.end > b) {
            return Err(());
        }
        Ok(r)
    }

    fn value(
        &mut self,
        p: usize,
        depth: usize,
        states: &[State],
        rule: Option<Action>,
    ) -> R<usize> {
        if depth > MAX_DEPTH {
            return err(p, "nested too deep");
        }
        match self.at(p)? {
            b'"' => self.string(p, rule),
            b'-' | b'0'..=b'9' => self.number(p, rule),
            b'{' => self.object(p, depth, states, rule),
            b'[' => self.array(p, depth, states, rule),
            _ => self.literal(p),
        }
    }

    fn string(&mut self, p: usize, rule: Option<Action>) -> R<usize> {
        let (end, escaped) = self.string_end(p)?;
        let content = p + 1..end - 1;
        match rule {
            Some(a) if a.how != How::Detect => {
                let decoded = if escaped {
                    json_unescape(&self.h[content.clone()]).ok_or(JsonError {
                        at: p,
                        what: "bad escape",
                    })?
                } else {
                    self.h[content.clone()].to_vec()
                };
                self.tmp.clear();
                let mut tmp = std::mem::take(&mut self.tmp);
                self.cx.field(a, &decoded, false, &mut tmp);
                self.begin(content.start);
                json_escape(&tmp, &mut self.out);
                self.copied = content.end;
                self.tmp = tmp;
            }
            Some(_) => self.detect_string(content, escaped, !self.detect)?,
            None if self.detect => self.detect_string(content, escaped, false)?,
            None => {}
        }
        Ok(end)
    }

    /// Detectors over one string's content; `alone`: scan it on its own (no
    /// whole-body pass was made, or the string has escapes).
    fn detect_string(
        &mut self,
        content: std::ops::Range<usize>,
        escaped: bool,
        alone: bool,
    ) -> R<()> {
        let h = self.h;
        let raw = &h[content.clone()];
        let pre = if alone || escaped {
            Err(())
        } else {
            self.finds_in(content.start, content.end)
        };
        match pre {
            Ok(r) if !self.cx.m.detectors.has_user() => {
                if r.is_empty() {
                    return Ok(());
                }
                // Replace each find in place; the rest of the string is copied as is.
                let finds = std::mem::take(&mut self.finds);
                for f in &finds[r] {
                    self.tmp.clear();
                    let mut tmp = std::mem::take(&mut self.tmp);
                    self.cx.found(f.what, &h[f.range.clone()], &mut tmp);
                    self.begin(f.range.start);
                    json_escape(&tmp, &mut self.out);
                    self.copied = f.range.end;
                    self.tmp = tmp;
                }
                self.finds = finds;
            }
            _ => {
                // On its own: decode, scan builtin and user patterns, write back whole.
                let decoded = if escaped {
                    json_unescape(raw).ok_or(JsonError {
                        at: content.start,
                        what: "bad escape",
                    })?
                } else {
                    raw.to_vec()
                };
                self.tmp.clear();
                let mut tmp = std::mem::take(&mut self.tmp);
                if self.cx.detect(&decoded, false, &mut tmp) {
                    self.begin(content.start);
                    json_escape(&tmp, &mut self.out);
                    self.copied = content.end;
                }
                self.tmp = tmp;
            }
        }
        Ok(())
    }

    fn number(&mut self, p: usize, rule: Option<Action>) -> R<usize> {
        let end = self.number_end(p)?;
        let tok = &self.h[p..end];
        let mut tmp = std::mem::take(&mut self.tmp);
        tmp.clear();
        let changed = match rule {
            Some(a) if a.how != How::Detect => self.cx.number_field(a, tok, &mut tmp),
            Some(_) | None if self.detect || rule.is_some() => {
                match (self.detect && !self.cx.m.detectors.has_user())
                    .then(|| self.finds_in(p, end))
                {
                    Some(Ok(r)) => {
                        let local: Vec<Found> = self.finds[r]
                            .iter()
                            .map(|f| Found {
                                range: f.range.start - p..f.range.end - p,
                                what: f.what,
                            })
                            .collect();
                        !local.is_empty() && self.cx.number_detect(tok, Some(&local), &mut tmp)
                    }
                    _ => self.cx.number_detect(tok, None, &mut tmp),
                }
            }
            _ => false,
        };
        if changed {
            self.replace(p, end, &tmp);
        }
        self.tmp = tmp;
        Ok(end)
    }

    fn object(
        &mut self,
        p: usize,
        depth: usize,
        states: &[State],
        rule: Option<Action>,
    ) -> R<usize> {
        let q = self.ws(p + 1);
        if self.at(q)? == b'}' {
            return Ok(q + 1);
        }
        let mut child = self.pool.pop().unwrap_or_default();
        let r = self.members(q, depth, states, rule, &mut child);
        self.pool.push(child);
        r
    }

    fn members(
        &mut self,
        mut q: usize,
        depth: usize,
        states: &[State],
        rule: Option<Action>,
        child: &mut Vec<State>,
    ) -> R<usize> {
        let mut kept_any = false;
        let mut prev_kept_end = q;
        let mut skip_comma = false;
        loop {
            let key_start = q;
            if self.at(q)? != b'"' {
                return err(q, "expected a member name");
            }
            let (key_end, escaped) = self.string_end(q)?;
            let mut v = self.ws(key_end);
            if self.at(v)? != b':' {
                return err(v, "expected ':'");
            }
            v = self.ws(v + 1);
            let here = if states.is_empty() {
                child.clear();
                None
            } else {
                let h = self.h;
                let raw = &h[key_start + 1..key_end - 1];
                let name: Cow<'_, [u8]> = if escaped {
                    Cow::Owned(json_unescape(raw).unwrap_or_default())
                } else {
                    Cow::Borrowed(raw)
                };
                let mut scratch = std::mem::take(&mut self.cx.scratch);
                let m = self
                    .cx
                    .m
                    .json
                    .child(states, Key::Name(&name), child, &mut scratch);
                self.cx.scratch = scratch;
                m
            };
            let best = min_action(rule, here);
            let vend;
            if best.is_some_and(|a| a.how == How::Drop) {
                vend = self.skip(v, depth + 1)?;
                self.cx.count(best.map_or(0, |a| a.id));
                if kept_any {
                    // `, "k": v` goes, from the end of the last member kept.
                    self.replace(self.copied.max(prev_kept_end), vend, b"");
                } else {
                    // First member(s): `"k": v` goes here, its comma when we reach it.
                    self.replace(self.copied.max(key_start), vend, b"");
                    skip_comma = true;
                }
            } else {
                // Member names are scanned too (maps keyed by e-mail), never rule-masked.
                if self.detect {
                    self.detect_string(key_start + 1..key_end - 1, escaped, false)?;
                }
                vend = self.value(v, depth + 1, child, best)?;
                kept_any = true;
                skip_comma = false;
                prev_kept_end = vend;
            }
            q = self.ws(vend);
            match self.at(q)? {
                b',' => {
                    if skip_comma {
                        self.replace(self.copied, q + 1, b"");
                    }
                    q = self.ws(q + 1);
                }
                b'}' => return Ok(q + 1),
                _ => return err(q, "expected ',' or '}'"),
            }
        }
    }

    fn array(
        &mut self,
        p: usize,
        depth: usize,
        states: &[State],
        rule: Option<Action>,
    ) -> R<usize> {
        let q = self.ws(p + 1);
        if self.at(q)? == b']' {
            return Ok(q + 1);
        }
        let mut child = self.pool.pop().unwrap_or_default();
        let r = self.elements(q, depth, states, rule, &mut child);
        self.pool.push(child);
        r
    }

    fn elements(
        &mut self,
        mut q: usize,
        depth: usize,
        states: &[State],
        rule: Option<Action>,
        child: &mut Vec<State>,
    ) -> R<usize> {
        let mut kept_any = false;
        let mut prev_kept_end = q;
        let mut skip_comma = false;
        let mut index = 0usize;
        loop {
            let here = if states.is_empty() {
                child.clear();
                None
            } else {
                let mut scratch = std::mem::take(&mut self.cx.scratch);
                let m = self
                    .cx
                    .m
                    .json
                    .child(states, Key::Index(index), child, &mut scratch);
                self.cx.scratch = scratch;
                m
            };
            let best = min_action(rule, here);
            let vend;
            if best.is_some_and(|a| a.how == How::Drop) {
                vend = self.skip(q, depth + 1)?;
                self.cx.count(best.map_or(0, |a| a.id));
                if kept_any {
                    self.replace(self.copied.max(prev_kept_end), vend, b"");
                } else {
                    self.replace(self.copied.max(q), vend, b"");
                    skip_comma = true;
                }
            } else {
                vend = self.value(q, depth + 1, child, best)?;
                kept_any = true;
                skip_comma = false;
                prev_kept_end = vend;
            }
            index += 1;
            q = self.ws(vend);
            match self.at(q)? {
                b',' => {
                    if skip_comma {
                        self.replace(self.copied, q + 1, b"");
                    }
                    q = self.ws(q + 1);
                }
                b']' => return Ok(q + 1),
                _ => return err(q, "expected ',' or ']'"),
            }
        }
    }
}
