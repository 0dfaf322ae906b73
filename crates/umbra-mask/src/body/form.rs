//! `name=value&…` lists: query strings and `application/x-www-form-urlencoded`
//! bodies. Names and values are percent-decoded before rules and detectors see
//! them, and only what changed is re-encoded; untouched pairs keep their bytes.

use crate::ctx::Ctx;
use crate::encode::{Set, percent_decode, percent_encode};
use crate::rules::{How, NameRules};

/// Masks the pairs of `input` (without the leading `?`). `None` when nothing
/// changed. `detect`: run the detectors over names and values that no rule took.
pub(crate) fn mask(
    cx: &mut Ctx<'_>,
    input: &[u8],
    rules: &NameRules,
    detect: bool,
    set: Set,
) -> Option<Vec<u8>> {
    if input.is_empty() || (rules.is_empty() && !detect) {
        return None;
    }
    let plus = true; // `+` is a space in both query strings and forms.
    let mut pieces: Vec<Piece> = Vec::new();
    let mut changed = false;
    let mut buf = Vec::new();
    for pair in input.split(|&c| c == b'&') {
        let eq = pair.iter().position(|&c| c == b'=');
        let (name_raw, value_raw) = match eq {
            Some(i) => (&pair[..i], Some(&pair[i + 1..])),
            None => (pair, None),
        };
        let name = percent_decode(name_raw, plus);
        let mut scratch = std::mem::take(&mut cx.scratch);
        let rule = rules.find(&name, &mut scratch);
        cx.scratch = scratch;
        let piece = match rule {
            Some(a) if a.how == How::Drop => {
                cx.count(a.id);
                Piece::Dropped
            }
            Some(a) if a.how != How::Detect => match value_raw {
                Some(v) => {
                    let value = percent_decode(v, plus);
                    buf.clear();
                    cx.field(a, &value, false, &mut buf);
                    let mut out = name_raw.to_vec();
                    out.push(b'=');
                    percent_encode(&buf, set, &mut out);
                    Piece::New(out)
                }
                // A bare name has no value to mask.
                None => Piece::Same(pair),
            },
            Some(_) | None if detect || rule.is_some() => {
                let mut out = Vec::new();
                buf.clear();
                let name_changed = cx.detect(&name, false, &mut buf);
                if name_changed {
                    percent_encode(&buf, set, &mut out);
                } else {
                    out.extend_from_slice(name_raw);
                }
                let mut value_changed = false;
                if let Some(v) = value_raw {
                    out.push(b'=');
                    let value = percent_decode(v, plus);
                    buf.clear();
                    value_changed = cx.detect(&value, false, &mut buf);
                    if value_changed {
                        percent_encode(&buf, set, &mut out);
                    } else {
                        out.extend_from_slice(v);
                    }
                }
                if name_changed || value_changed {
                    Piece::New(out)
                } else {
                    Piece::Same(pair)
                }
            }
            _ => Piece::Same(pair),
        };
        changed |= !matches!(piece, Piece::Same(_));
        pieces.push(piece);
    }
    if !changed {
        return None;
    }
    let mut out = Vec::with_capacity(input.len());
    let mut first = true;
    for p in &pieces {
        let bytes = match p {
            Piece::Dropped => continue,
            Piece::Same(b) => *b,
            Piece::New(v) => v.as_slice(),
        };
        if !first {
            out.push(b'&');
        }
        first = false;
        out.extend_from_slice(bytes);
    }
    Some(out)
}

enum Piece<'a> {
    Same(&'a [u8]),
    New(Vec<u8>),
    Dropped,
}
