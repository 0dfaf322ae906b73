//! The state of one `mask` call: counters and scratch buffers, and the two
//! operations everything else is built from: mask a whole value under a rule, and
//! mask what the detectors find inside a value.

use std::sync::Arc;

use crate::detect::{Found, Kind, What};
use crate::preserve;
use crate::rules::{Action, How};
use crate::{Dropped, MaskReport, Masker};

pub(crate) struct Ctx<'m> {
    pub m: &'m Masker,
    counts: Vec<u32>,
    finds: Vec<Found>,
    pub scratch: Vec<u8>,
}

impl<'m> Ctx<'m> {
    pub(crate) fn new(m: &'m Masker) -> Ctx<'m> {
        Ctx {
            m,
            counts: vec![0; m.names.len()],
            finds: Vec::new(),
            scratch: Vec::new(),
        }
    }

    pub(crate) fn count(&mut self, id: u16) {
        if let Some(c) = self.counts.get_mut(usize::from(id)) {
            *c = c.saturating_add(1);
        }
    }

    pub(crate) fn total(&self) -> u32 {
        self.counts.iter().fold(0u32, |a, &c| a.saturating_add(c))
    }

    /// The counters, to restore when an attempt (parsing a body as JSON) fails and
    /// another is made: a failed attempt masked nothing that will be sent.
    pub(crate) fn snapshot(&self) -> Vec<u32> {
        self.counts.clone()
    }

    pub(crate) fn restore(&mut self, s: Vec<u32>) {
        self.counts = s;
    }

    pub(crate) fn report(self, body_stripped: Option<Dropped>) -> MaskReport {
        let masked = self
            .counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| (Arc::clone(&self.m.names[i]), *c))
            .collect();
        MaskReport {
            masked,
            body_stripped,
        }
    }

    /// `v` masked whole under rule action `a`, appended to `out`; false when
    /// nothing changed (a `detect` rule that found nothing). `drop` appends nothing:
    /// callers that can remove the value do so before asking.
    pub(crate) fn field(&mut self, a: Action, v: &[u8], text: bool, out: &mut Vec<u8>) -> bool {
        match a.how {
            How::Detect => {
                let start = out.len();
                if self.detect(v, text, out) {
                    return true;
                }
                out.truncate(start);
                out.extend_from_slice(v);
                return false;
            }
            How::Redact => out.extend_from_slice(&self.m.marker),
            How::Hash => out.extend_from_slice(self.m.key.hash_token(v).as_bytes()),
            How::Preserve => {
                let kind = self.m.detectors.classify(v);
                preserve::preserve(&self.m.key, kind, v, out);
            }
            How::Drop => {}
        }
        self.count(a.id);
        true
    }

    /// The replacement for a detected value.
    pub(crate) fn found(&mut self, what: What, v: &[u8], out: &mut Vec<u8>) {
        let a = self.m.detectors.action(what);
        match a.how {
            How::Redact => out.extend_from_slice(&self.m.marker),
            How::Hash => out.extend_from_slice(self.m.key.hash_token(v).as_bytes()),
            How::Preserve | How::Detect => {
                let kind = match what {
                    What::Kind(k) => Some(k),
                    What::User(_) | What::Credential => None,
                };
                preserve::preserve(&self.m.key, kind, v, out);
            }
            How::Drop => {}
        }
        self.count(a.id);
    }

    /// Runs the detectors over `v` (as free text when `text`, which adds credential
    /// assignments); when anything is found, writes `v` masked to `out` and
    /// returns true. Otherwise `out` is untouched.
    pub(crate) fn detect(&mut self, v: &[u8], text: bool, out: &mut Vec<u8>) -> bool {
        let mut finds = std::mem::take(&mut self.finds);
        if text {
            self.m.detectors.scan_text(v, &mut finds);
        } else {
            self.m.detectors.scan_value(v, &mut finds);
        }
        let any = !finds.is_empty();
        if any {
            self.apply(v, &finds, out);
        }
        self.finds = finds;
        any
    }

    /// Writes `v` with every find replaced.
    pub(crate) fn apply(&mut self, v: &[u8], finds: &[Found], out: &mut Vec<u8>) {
        let mut last = 0;
        for f in finds {
            out.extend_from_slice(&v[last..f.range.start]);
            self.found(f.what, &v[f.range.clone()], out);
            last = f.range.end;
        }
        out.extend_from_slice(&v[last..]);
    }

    /// A JSON number (`tok`) under rule action `a`: `0` for redact, keyed digits
    /// of the same shape for hash and preserve, so the document keeps its types.
    pub(crate) fn number_field(&mut self, a: Action, tok: &[u8], out: &mut Vec<u8>) -> bool {
        match a.how {
            How::Detect => return self.number_detect(tok, None, out),
            How::Redact | How::Drop => out.push(b'0'),
            How::Hash | How::Preserve => preserve::number(&self.m.key, tok, out),
        }
        self.count(a.id);
        true
    }

    /// Detectors over a JSON number (a card written as a number): with `finds`
    /// from the whole-body pass, or scanning `tok` itself.
    pub(crate) fn number_detect(
        &mut self,
        tok: &[u8],
        finds: Option<&[Found]>,
        out: &mut Vec<u8>,
    ) -> bool {
        let mut own = std::mem::take(&mut self.finds);
        let changed = match finds {
            Some(f) => self.number_apply(tok, f, out),
            None => {
                self.m.detectors.scan_value(tok, &mut own);
                self.number_apply(tok, &own, out)
            }
        };
        self.finds = own;
        changed
    }

    fn number_apply(&mut self, tok: &[u8], list: &[Found], out: &mut Vec<u8>) -> bool {
        if list.is_empty() {
            return false;
        }
        let start = out.len();
        let mut last = 0;
        for f in list {
            let a = self.m.detectors.action(f.what);
            let v = &tok[f.range.clone()];
            out.extend_from_slice(&tok[last..f.range.start]);
            match (a.how, f.what) {
                (How::Redact | How::Drop, _) => {
                    // No marker fits in a number: the whole number becomes 0.
                    out.truncate(start);
                    out.push(b'0');
                    self.count(a.id);
                    return true;
                }
                (How::Preserve | How::Detect, What::Kind(Kind::Card)) => {
                    preserve::preserve(&self.m.key, Some(Kind::Card), v, out)
                }
                _ => preserve::number(&self.m.key, v, out),
            }
            self.count(a.id);
            last = f.range.end;
        }
        out.extend_from_slice(&tok[last..]);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MaskConfig;

    fn run(how: How, v: &str) -> (String, bool, u32) {
        let m = Masker::with_secret(&MaskConfig::default(), b"unit secret").unwrap();
        let mut cx = Ctx::new(&m);
        let mut out = Vec::new();
        let a = Action {
            id: 0,
            order: 0,
            how,
        };
        let changed = cx.field(a, v.as_bytes(), false, &mut out);
        (String::from_utf8(out).unwrap(), changed, cx.total())
    }

    #[test]
    fn every_strategy_on_a_field() {
        assert_eq!(run(How::Redact, "Alice"), ("REDACTED".into(), true, 1));
        assert_eq!(run(How::Drop, "Alice"), (String::new(), true, 1));
        let (h, _, n) = run(How::Hash, "Alice");
        assert_eq!((h.len(), n), (32, 1));
        assert_eq!(run(How::Hash, "Alice").0, h, "keyed, so stable");
        let (p, _, _) = run(How::Preserve, "Alice");
        assert!(p.len() == 5 && p.starts_with(|c: char| c.is_ascii_uppercase()) && p != "Alice");
        // preserve picks the detector's format for a whole value
        let (e, _, _) = run(How::Preserve, "al@example.com");
        assert!(e.contains('@') && e.ends_with(".com") && e != "al@example.com");
        // detect masks what it finds, counted under the detector, not the rule
        let (d, changed, n) = run(How::Detect, "mail al@example.com");
        assert!(changed && d.starts_with("mail ") && !d.contains("al@") && n == 1);
        assert_eq!(
            run(How::Detect, "nothing here"),
            ("nothing here".into(), false, 0)
        );
    }

    #[test]
    fn every_strategy_on_a_json_number() {
        let m = Masker::with_secret(&MaskConfig::default(), b"unit secret").unwrap();
        let mut cx = Ctx::new(&m);
        let num = |cx: &mut Ctx<'_>, how, v: &str| {
            let mut out = Vec::new();
            cx.number_field(
                Action {
                    id: 0,
                    order: 0,
                    how,
                },
                v.as_bytes(),
                &mut out,
            );
            String::from_utf8(out).unwrap()
        };
        assert_eq!(num(&mut cx, How::Redact, "123.5"), "0");
        let h = num(&mut cx, How::Hash, "123.5");
        assert!(h.len() == 5 && h.contains('.') && h != "123.5", "{h}");
        let c = num(&mut cx, How::Detect, "4111111111111111");
        assert!(c.starts_with("411111") && c != "4111111111111111", "{c}");
    }
}
