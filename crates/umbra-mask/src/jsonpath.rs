//! The JSONPath subset rules use to pick JSON body fields, and the matcher the
//! body walker runs while it streams through a document.
//!
//! Supported: `$` (the whole document), `.name`, `['name']` / `["name"]`, `[0]`,
//! `.*` / `[*]` (any member or element), and `..` before any of those (at any depth
//! below): `$.user.email`, `$..password`, `$.cards[*].number`, `$.items[0].sku`,
//! `$['odd key']`. Filters, slices, unions and negative indexes are rejected with
//! a message that says so, rather than silently matching nothing.
//!
//! Matching is a small automaton over the path from the root: a state is
//! `(rule, step)`; entering a member or element advances every state whose step
//! accepts it, and `..` steps also stay where they are. So the walker never builds
//! the document or backtracks, whatever the number of rules.

use crate::rules::{Action, NameMatch, Normalised};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("JSONPath {path:?}, character {at}: {problem}")]
pub struct JsonPathError {
    /// The path as written.
    pub path: String,
    /// 1-based character position of the problem.
    pub at: usize,
    /// What is wrong there.
    pub problem: String,
}

#[derive(Clone, Debug)]
pub(crate) struct JsonPath {
    steps: Vec<Step>,
}

#[derive(Clone, Debug)]
struct Step {
    descendant: bool,
    sel: Sel,
}

#[derive(Clone, Debug)]
enum Sel {
    /// A member name, exactly (JSONPath names are case-sensitive).
    Exact(Vec<u8>),
    /// Any name of a built-in list (the default rules' credential names).
    Listed(NameMatch),
    Index(usize),
    Any,
}

/// Where the walker is: a member name or an element index.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Key<'a> {
    Name(&'a [u8]),
    Index(usize),
}

impl Sel {
    fn matches(&self, k: Key<'_>, name: &mut Normalised<'_>) -> bool {
        match (self, k) {
            (Sel::Any, _) => true,
            (Sel::Exact(e), Key::Name(n)) => e.as_slice() == n,
            (Sel::Listed(m), Key::Name(_)) => m.matches_normalised(name),
            (Sel::Index(i), Key::Index(j)) => *i == j,
            _ => false,
        }
    }
}

impl JsonPath {
    pub(crate) fn parse(path: &str) -> Result<JsonPath, JsonPathError> {
        let err = |at: usize, problem: &str| JsonPathError {
            path: path.to_string(),
            at: path[..at.min(path.len())].chars().count() + 1,
            problem: problem.to_string(),
        };
        let b = path.as_bytes();
        if b.first() != Some(&b'$') {
            return Err(err(0, "a path starts with '$'"));
        }
        let mut steps = Vec::new();
        let mut i = 1;
        while i < b.len() {
            let descendant = b[i..].starts_with(b"..");
            let sel_at = if descendant {
                i + 2
            } else if b[i] == b'.' || b[i] == b'[' {
                i + usize::from(b[i] == b'.')
            } else {
                return Err(err(i, "expected '.', '..' or '['"));
            };
            let bracket = b.get(sel_at) == Some(&b'[') && (descendant || b[i] == b'[');
            if bracket {
                let (sel, next) = bracket_sel(path, sel_at).map_err(|(at, p)| err(at, &p))?;
                steps.push(Step { descendant, sel });
                i = next;
                continue;
            }
            match b.get(sel_at) {
                None => return Err(err(sel_at, "a name, '*' or '[' must follow")),
                Some(b'*') => {
                    steps.push(Step {
                        descendant,
                        sel: Sel::Any,
                    });
                    i = sel_at + 1;
                }
                Some(b'.') => return Err(err(sel_at, "'...' is not a selector")),
                Some(_) => {
                    let end = b[sel_at..]
                        .iter()
                        .position(|&c| {
                            matches!(
                                c,
                                b'.' | b'['
                                    | b']'
                                    | b'\''
                                    | b'"'
                                    | b'*'
                                    | b' '
                                    | b'?'
                                    | b'('
                                    | b')'
                            )
                        })
                        .map_or(b.len(), |p| sel_at + p);
                    if end == sel_at {
                        return Err(err(
                            sel_at,
                            "empty member name; quote unusual names: ['name']",
                        ));
                    }
                    steps.push(Step {
                        descendant,
                        sel: Sel::Exact(b[sel_at..end].to_vec()),
                    });
                    i = end;
                }
            }
        }
        Ok(JsonPath { steps })
    }

    /// `$..<listed name>`: the default rules' credential fields at any depth.
    pub(crate) fn any_depth(m: NameMatch) -> JsonPath {
        JsonPath {
            steps: vec![Step {
                descendant: true,
                sel: Sel::Listed(m),
            }],
        }
    }
}

/// `[*]`, `[12]`, `['name']`, `["name"]` at `at` (the `[`); returns the selector
/// and the position after `]`.
fn bracket_sel(path: &str, at: usize) -> Result<(Sel, usize), (usize, String)> {
    let b = path.as_bytes();
    let i = at + 1;
    match b.get(i) {
        None => Err((i, "unclosed '['".into())),
        Some(b'*') => close(b, i + 1).map(|n| (Sel::Any, n)),
        Some(b'0'..=b'9') => {
            let end = i + b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
            match b.get(end) {
                Some(b':') => {
                    return Err((end, "slices are not supported; use [*] or one index".into()));
                }
                Some(b',') => {
                    return Err((
                        end,
                        "unions are not supported; write one rule path per field".into(),
                    ));
                }
                _ => {}
            }
            let n: usize = path[i..end]
                .parse()
                .map_err(|_| (i, "index is too large".to_string()))?;
            close(b, end).map(|next| (Sel::Index(n), next))
        }
        Some(b'-') => Err((i, "negative indexes are not supported".into())),
        Some(b'?') => Err((i, "filter expressions are not supported".into())),
        Some(b':') => Err((i, "slices are not supported; use [*] or one index".into())),
        Some(&q @ (b'\'' | b'"')) => {
            let mut name = String::new();
            let mut j = i + 1;
            let mut chars = path[j..].char_indices();
            loop {
                let Some((off, c)) = chars.next() else {
                    return Err((i, "unterminated quoted name".into()));
                };
                if c == '\\' {
                    match chars.next() {
                        Some((_, e)) => name.push(e),
                        None => return Err((i, "unterminated quoted name".into())),
                    }
                } else if c as u32 == u32::from(q) {
                    j += off + 1;
                    break;
                } else {
                    name.push(c);
                }
            }
            if b.get(j) == Some(&b',') {
                return Err((
                    j,
                    "unions are not supported; write one rule path per field".into(),
                ));
            }
            close(b, j).map(|next| (Sel::Exact(name.into_bytes()), next))
        }
        Some(_) => Err((
            i,
            "expected '*', an index or a quoted name inside [ ]".into(),
        )),
    }
}

fn close(b: &[u8], i: usize) -> Result<usize, (usize, String)> {
    match b.get(i) {
        Some(b']') => Ok(i + 1),
        Some(b',') => Err((
            i,
            "unions are not supported; write one rule path per field".into(),
        )),
        _ => Err((i, "expected ']'".into())),
    }
}

/// A matcher state: rule `.0` has matched its first `.1` steps.
pub(crate) type State = (u32, u32);

#[derive(Clone, Debug, Default)]
pub(crate) struct JsonRules {
    paths: Vec<(JsonPath, Action)>,
}

impl JsonRules {
    pub(crate) fn push(&mut self, p: JsonPath, a: Action) {
        self.paths.push((p, a));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    pub(crate) fn has_user_rules(&self, first_default: u32) -> bool {
        self.paths.iter().any(|(_, a)| a.order < first_default)
    }

    /// The states at the document root, and the rule that selects the root (`$`).
    pub(crate) fn root(&self, out: &mut Vec<State>) -> Option<Action> {
        out.clear();
        let mut best: Option<Action> = None;
        for (r, (p, a)) in self.paths.iter().enumerate() {
            if p.steps.is_empty() {
                best = min_action(best, Some(*a));
            } else {
                out.push((r as u32, 0));
            }
        }
        best
    }

    /// Enters `key` from a node in `states`: the child's states go to `out`, and the
    /// best (lowest order) rule that selects the child itself is returned.
    pub(crate) fn child(
        &self,
        states: &[State],
        key: Key<'_>,
        out: &mut Vec<State>,
        scratch: &mut Vec<u8>,
    ) -> Option<Action> {
        out.clear();
        let mut best = None;
        let raw: &[u8] = match key {
            Key::Name(n) => n,
            Key::Index(_) => b"",
        };
        let mut name = Normalised::new(raw, scratch);
        for &(r, i) in states {
            let (path, action) = &self.paths[r as usize];
            let Some(step) = path.steps.get(i as usize) else {
                continue;
            };
            if step.descendant && !out.contains(&(r, i)) {
                out.push((r, i));
            }
            if step.sel.matches(key, &mut name) {
                if i as usize + 1 == path.steps.len() {
                    best = min_action(best, Some(*action));
                } else if !out.contains(&(r, i + 1)) {
                    out.push((r, i + 1));
                }
            }
        }
        best
    }
}

pub(crate) fn min_action(a: Option<Action>, b: Option<Action>) -> Option<Action> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y.order < x.order { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::How;

    fn act(order: u32) -> Action {
        Action {
            id: order as u16,
            order,
            how: How::Redact,
        }
    }

    /// Which of the given paths (by rule order) select the node at `path`.
    fn selects(rules: &[&str], path: &[Key<'_>]) -> Option<u32> {
        let mut jr = JsonRules::default();
        for (i, r) in rules.iter().enumerate() {
            jr.push(JsonPath::parse(r).unwrap(), act(i as u32));
        }
        let mut states = Vec::new();
        let mut best = jr.root(&mut states);
        let mut next = Vec::new();
        let mut scratch = Vec::new();
        for k in path {
            let here = jr.child(&states, *k, &mut next, &mut scratch);
            best = min_action(best, here);
            std::mem::swap(&mut states, &mut next);
        }
        best.map(|a| a.order)
    }

    use Key::{Index as I, Name as N};

    #[test]
    fn paths_select_what_they_say() {
        assert_eq!(
            selects(&["$.user.email"], &[N(b"user"), N(b"email")]),
            Some(0)
        );
        assert_eq!(selects(&["$.user.email"], &[N(b"user")]), None);
        assert_eq!(
            selects(&["$.user.email"], &[N(b"x"), N(b"user"), N(b"email")]),
            None
        );
        assert_eq!(
            selects(&["$..password"], &[N(b"a"), I(3), N(b"password")]),
            Some(0)
        );
        assert_eq!(selects(&["$..password"], &[N(b"Password")]), None);
        assert_eq!(
            selects(&["$.cards[*].number"], &[N(b"cards"), I(7), N(b"number")]),
            Some(0)
        );
        assert_eq!(
            selects(&["$.cards[*].number"], &[N(b"cards"), N(b"number")]),
            None
        );
        assert_eq!(selects(&["$.a[0]"], &[N(b"a"), I(0)]), Some(0));
        assert_eq!(selects(&["$.a[0]"], &[N(b"a"), I(1)]), None);
        assert_eq!(
            selects(&["$['odd key'].x"], &[N(b"odd key"), N(b"x")]),
            Some(0)
        );
        assert_eq!(selects(&["$[\"q\\\"\"]"], &[N(b"q\"")]), Some(0));
        assert_eq!(selects(&["$.*.id"], &[N(b"any"), N(b"id")]), Some(0));
        assert_eq!(selects(&["$..a.b"], &[N(b"a"), N(b"a"), N(b"b")]), Some(0));
        assert_eq!(selects(&["$..[0]"], &[N(b"x"), I(0)]), Some(0));
        assert_eq!(selects(&["$"], &[]), Some(0));
        assert_eq!(selects(&["$.a", "$..a"], &[N(b"a")]), Some(0));
        assert_eq!(selects(&["$..a", "$.a"], &[N(b"a")]), Some(0));
    }

    #[test]
    fn parse_errors_say_what_and_where() {
        let e = |p: &str| JsonPath::parse(p).unwrap_err();
        assert_eq!(e("user.email").at, 1);
        assert!(e("user.email").problem.contains("starts with '$'"));
        assert!(e("$.a[?(@.x)]").problem.contains("filter"));
        assert!(e("$.a[-1]").problem.contains("negative"));
        assert!(e("$.a[0:2]").problem.contains("slices"));
        assert!(e("$.a[0,1]").problem.contains("unions"));
        assert!(e("$['a','b']").problem.contains("unions"));
        assert!(e("$.a[").problem.contains("unclosed"));
        assert!(e("$.a[0").problem.contains("expected ']'"));
        assert!(e("$.").problem.contains("must follow"));
        assert!(e("$...a").problem.contains("not a selector"));
        assert!(e("$['abc").problem.contains("unterminated"));
        assert!(e("$a").problem.contains("expected '.'"));
        let x = e("$.a[?(@.x)]");
        assert_eq!(x.at, 5);
        assert_eq!(
            x.to_string(),
            "JSONPath \"$.a[?(@.x)]\", character 5: filter expressions are not supported"
        );
    }
}
