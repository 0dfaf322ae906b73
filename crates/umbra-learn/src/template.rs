//! Path templating: `/users/8812/orders/3f2a…` becomes `/users/{id}/orders/{uuid}`.
//!
//! Two passes, because neither alone is enough:
//! 1. *Patterns*: a segment that looks like a number, UUID, hex id, hash, date,
//!    e-mail or long opaque token is a placeholder whatever the data says
//!    ([`segment_kind`]).
//! 2. *Learned*: paths go into a trie of segments; at a node whose children are
//!    many and mostly rare (product slugs, search terms, file names), the children
//!    are merged into one `{slug}`/`{param}` child ([`Templater::learn`]). A
//!    file extension survives the merge (`/static/{param}.js`), so scripts and
//!    images under one folder stay apart.
//!
//! The trie is then the templater: a path walks it, taking the literal child when
//! one exists and the placeholder child otherwise. A set of templates can be
//! turned back into a trie ([`Templater::from_templates`]), which is how a saved
//! profile set templates new requests exactly as it was learned.

use ahash::AHashMap;

/// A node merges its children into a placeholder when it has at least this many
/// distinct literal children...
const MIN_DISTINCT: usize = 10;
/// ...and they are rare: distinct children at least this fraction of the requests through the node...
const MIN_DISTINCT_RATIO: f64 = 0.05;
/// ...or when it has this many distinct children, however often each is seen.
const ALWAYS_MERGE_DISTINCT: usize = 200;

/// The placeholder kind of a segment that matches a pattern, or `None` for a literal.
pub fn segment_kind(seg: &str) -> Option<&'static str> {
    let b = seg.as_bytes();
    if b.is_empty() {
        return None;
    }
    if b.iter().all(u8::is_ascii_digit) {
        return Some("id");
    }
    if is_uuid(b) {
        return Some("uuid");
    }
    if is_date(b) {
        return Some("date");
    }
    let hex = b.iter().all(u8::is_ascii_hexdigit);
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    if hex && digits > 0 && digits < b.len() {
        if matches!(b.len(), 32 | 40 | 56 | 64 | 96 | 128) {
            return Some("hash");
        }
        if b.len() >= 12 {
            return Some("hex");
        }
    }
    if is_email(b) {
        return Some("email");
    }
    if is_token(b) {
        return Some("token");
    }
    None
}

fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// `2019-01-22`, `2019_01_22` (and with a time part after `T`).
fn is_date(b: &[u8]) -> bool {
    if b.len() < 10 {
        return false;
    }
    let d = |i: usize| b[i].is_ascii_digit();
    let sep = b[4];
    (sep == b'-' || sep == b'_')
        && b[7] == sep
        && d(0)
        && d(1)
        && d(2)
        && d(3)
        && d(5)
        && d(6)
        && d(8)
        && d(9)
        && (b.len() == 10 || b[10] == b'T')
}

fn is_email(b: &[u8]) -> bool {
    // Raw `@` or percent-encoded `%40`, with a dot in the domain.
    let at = memchr::memchr(b'@', b).or_else(|| memchr::memmem::find(b, b"%40"));
    match at {
        Some(i) if i > 0 => {
            let domain = &b[i + 1..];
            domain.contains(&b'.') && domain.len() >= 3
        }
        _ => false,
    }
}

/// Long opaque strings: session ids, API keys, base64 blobs. Mixed letters and digits,
/// no word-like separators, at least 20 characters.
fn is_token(b: &[u8]) -> bool {
    if b.len() < 20 {
        return false;
    }
    let mut digits = 0;
    let mut letters = 0;
    for c in b {
        match c {
            b'0'..=b'9' => digits += 1,
            b'a'..=b'z' | b'A'..=b'Z' => letters += 1,
            b'_' | b'=' | b'+' | b'.' | b'~' => {}
            b'-' => {}
            _ => return false,
        }
    }
    // A slug like `samsung-galaxy-s10-black-edition` has digits and letters too:
    // require digits to be a real part of the string, and few dashes.
    let dashes = b.iter().filter(|c| **c == b'-').count();
    digits * 5 >= b.len() && letters > 0 && dashes * 8 < b.len()
}

/// Extensions kept beside a placeholder, lower-case.
fn static_extension(seg: &str) -> Option<&'static str> {
    let dot = seg.rfind('.')?;
    let ext = &seg[dot + 1..];
    if dot == 0
        || ext.is_empty()
        || ext.len() > 5
        || !ext.bytes().all(|c| c.is_ascii_alphanumeric())
    {
        return None;
    }
    const KNOWN: &[&str] = &[
        "js", "mjs", "css", "png", "jpg", "jpeg", "gif", "svg", "webp", "avif", "ico", "bmp",
        "woff", "woff2", "ttf", "otf", "eot", "map", "html", "htm", "json", "xml", "txt", "pdf",
        "mp4", "webm", "mp3", "zip", "gz", "csv", "php", "asp", "aspx", "jsp",
    ];
    KNOWN.iter().find(|k| k.eq_ignore_ascii_case(ext)).copied()
}

/// The placeholder kind and kept extension (without the dot) of a segment that
/// matches a pattern; no allocation, for the hot lookup path.
fn pattern_parts(seg: &str) -> Option<(&'static str, &'static str)> {
    if let Some(kind) = segment_kind(seg) {
        return Some((kind, ""));
    }
    let ext = static_extension(seg)?;
    let stem = &seg[..seg.len() - ext.len() - 1];
    segment_kind(stem).map(|kind| (kind, ext))
}

/// Whether a stored extension (`.jpg` or empty) is `ext` (no dot, or empty).
fn ext_is(stored: &str, ext: &str) -> bool {
    if ext.is_empty() {
        stored.is_empty()
    } else {
        stored.len() == ext.len() + 1 && stored.as_bytes()[0] == b'.' && &stored[1..] == ext
    }
}

/// What a segment becomes after the pattern pass: a literal, or a placeholder
/// (with its extension kept: `{id}.jpg`).
fn pattern_key(seg: &str) -> SegKey {
    if let Some(kind) = segment_kind(seg) {
        return SegKey::Placeholder(kind.to_string(), String::new());
    }
    if let Some(ext) = static_extension(seg) {
        let stem = &seg[..seg.len() - ext.len() - 1];
        if let Some(kind) = segment_kind(stem) {
            return SegKey::Placeholder(kind.to_string(), format!(".{ext}"));
        }
    }
    SegKey::Literal(seg.to_string())
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum SegKey {
    Literal(String),
    /// Placeholder name and the extension kept after it (may be empty).
    Placeholder(String, String),
}

impl SegKey {
    fn render(&self) -> String {
        match self {
            SegKey::Literal(s) => s.clone(),
            SegKey::Placeholder(name, ext) => format!("{{{name}}}{ext}"),
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Node {
    count: u64,
    /// Literal children by segment.
    literals: AHashMap<String, usize>,
    /// Placeholder children, keyed by (name, extension).
    placeholders: Vec<(String, String, usize)>,
    /// Template index when a path ends here.
    template: Option<u32>,
}

/// Turns concrete paths into templates. Build it with [`Templater::learn`] or
/// [`Templater::from_templates`], then call [`Templater::template_of`].
#[derive(Debug, Clone)]
pub struct Templater {
    nodes: Vec<Node>,
    /// The rendered template of each template index.
    templates: Vec<String>,
    /// Where a node went when it was merged into another (`None`: still live).
    forward: Vec<Option<usize>>,
}

/// The template a path matched, and the concrete values of its placeholders.
#[derive(Debug, Clone, PartialEq)]
pub struct Match<'a> {
    pub template: u32,
    pub values: Vec<&'a str>,
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    // `/a//b/` has segments "a", "", "b", "": keep empties so the template
    // reproduces the path's shape, but drop the leading one.
    path.strip_prefix('/').unwrap_or(path).split('/')
}

impl Default for Templater {
    fn default() -> Self {
        Templater {
            nodes: vec![Node::default()],
            templates: Vec::new(),
            forward: vec![None],
        }
    }
}

impl Templater {
    /// Learns templates from a collection of paths (without query strings).
    pub fn learn<'a>(paths: impl IntoIterator<Item = &'a str>) -> Templater {
        let mut t = Templater::default();
        for p in paths {
            let _ = t.insert_pattern_path(p);
        }
        t.collapse(0);
        t.number_templates();
        t
    }

    /// Rebuilds a templater from rendered templates (`/users/{id}/x`), so that a
    /// saved profile set templates paths the way it did when it was learned. Any
    /// `{name}` segment is a placeholder; new paths may be added with
    /// [`Templater::extend`].
    pub fn from_templates<'a>(templates: impl IntoIterator<Item = &'a str>) -> Templater {
        let mut t = Templater::default();
        for tpl in templates {
            let mut node = 0;
            for seg in segments(tpl) {
                let key = parse_rendered(seg);
                node = t.child_or_insert(node, key);
            }
            t.nodes[node].count += 1;
            if t.nodes[node].template.is_none() {
                t.nodes[node].template = Some(u32::MAX);
            }
        }
        t.number_templates();
        t
    }

    /// Adds new paths to an existing templater: they are matched where they can
    /// be, and the rest are learned among themselves (placeholders already in the
    /// trie are kept). Existing template indices keep their numbers.
    pub fn extend<'a>(&mut self, paths: impl IntoIterator<Item = &'a str>) {
        for p in paths {
            let _ = self.insert_pattern_path(p);
        }
        self.collapse(0);
        self.number_templates();
    }

    /// Like [`Templater::extend`], and returns the template index of each path in
    /// order: one walk of the trie per path instead of two.
    pub fn extend_and_template<'a>(
        &mut self,
        paths: impl IntoIterator<Item = &'a str>,
    ) -> Vec<u32> {
        let leaves: Vec<usize> = paths
            .into_iter()
            .map(|p| self.insert_pattern_path(p))
            .collect();
        self.collapse(0);
        self.number_templates();
        leaves
            .into_iter()
            .map(|leaf| self.nodes[self.resolve(leaf)].template.unwrap_or(u32::MAX))
            .collect()
    }

    /// The live node a (possibly merged) node ended up in.
    fn resolve(&self, mut node: usize) -> usize {
        while let Some(next) = self.forward[node] {
            node = next;
        }
        node
    }

    /// Number of distinct templates.
    pub fn len(&self) -> usize {
        self.templates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }

    /// The rendered template of an index.
    pub fn template(&self, index: u32) -> &str {
        &self.templates[index as usize]
    }

    pub fn templates(&self) -> &[String] {
        &self.templates
    }

    /// Finds the template of a concrete path. A path the trie does not know
    /// gets `None`; use [`Templater::pattern_template`] for a fallback.
    pub fn template_of<'a>(&self, path: &'a str) -> Option<Match<'a>> {
        let mut values = Vec::new();
        self.walk(path, |v| values.push(v))
            .map(|template| Match { template, values })
    }

    /// The template index of a concrete path, like [`Templater::template_of`]
    /// without collecting the placeholders' values: no allocation.
    pub fn template_index(&self, path: &str) -> Option<u32> {
        self.walk(path, |_| {})
    }

    /// Walks the trie along `path`, handing each segment a placeholder
    /// matched to `value`; the template index where the path ends.
    fn walk<'a>(&self, path: &'a str, mut value: impl FnMut(&'a str)) -> Option<u32> {
        let mut node = 0usize;
        for seg in segments(path) {
            let n = &self.nodes[node];
            if let Some(&c) = n.literals.get(seg) {
                node = c;
                continue;
            }
            node = self.placeholder_child(node, seg)?;
            value(seg);
        }
        self.nodes[node].template
    }

    /// The pattern-pass template of a path: what a path the trie has never seen
    /// looks like (`/new/{id}`).
    pub fn pattern_template(path: &str) -> String {
        let mut out = String::with_capacity(path.len());
        for seg in segments(path) {
            out.push('/');
            out.push_str(&pattern_key(seg).render());
        }
        out
    }

    fn placeholder_child(&self, node: usize, seg: &str) -> Option<usize> {
        let n = &self.nodes[node];
        if n.placeholders.is_empty() {
            return None;
        }
        // Prefer the placeholder whose pattern and extension fit the segment,
        // then a learned one with the same extension, then any learned one.
        if let Some((kind, ext)) = pattern_parts(seg)
            && let Some((_, _, c)) = n
                .placeholders
                .iter()
                .find(|(a, b, _)| a == kind && ext_is(b, ext))
        {
            return Some(*c);
        }
        let ext = static_extension(seg).unwrap_or("");
        let learned = |(name, _, _): &&(String, String, usize)| is_learned(name);
        n.placeholders
            .iter()
            .filter(learned)
            .find(|(_, e, _)| ext_is(e, ext))
            .or_else(|| {
                n.placeholders
                    .iter()
                    .filter(learned)
                    .find(|(_, e, _)| e.is_empty())
            })
            .map(|(_, _, c)| *c)
    }

    /// Inserts a path by patterns and returns the node it ends at.
    fn insert_pattern_path(&mut self, path: &str) -> usize {
        let mut node = 0;
        self.nodes[0].count += 1;
        for seg in segments(path) {
            // Follow an existing literal first, then an existing placeholder that
            // accepts the segment, and only then add a child.
            let next = if let Some(&c) = self.nodes[node].literals.get(seg) {
                c
            } else if let Some(c) = self.placeholder_child(node, seg) {
                c
            } else {
                self.child_or_insert(node, pattern_key(seg))
            };
            node = next;
            self.nodes[node].count += 1;
        }
        // Mark the end of a path; numbered later.
        if self.nodes[node].template.is_none() {
            self.nodes[node].template = Some(u32::MAX);
        }
        node
    }

    fn child_or_insert(&mut self, node: usize, key: SegKey) -> usize {
        match key {
            SegKey::Literal(s) => {
                if let Some(&c) = self.nodes[node].literals.get(&s) {
                    return c;
                }
                let c = self.new_node();
                self.nodes[node].literals.insert(s, c);
                c
            }
            SegKey::Placeholder(name, ext) => {
                if let Some((_, _, c)) = self.nodes[node]
                    .placeholders
                    .iter()
                    .find(|(a, b, _)| *a == name && *b == ext)
                {
                    return *c;
                }
                let c = self.new_node();
                self.nodes[node].placeholders.push((name, ext, c));
                c
            }
        }
    }

    fn new_node(&mut self) -> usize {
        self.nodes.push(Node::default());
        self.forward.push(None);
        self.nodes.len() - 1
    }

    /// Merges rare, numerous literal children into placeholders, top-down.
    fn collapse(&mut self, node: usize) {
        let n = &self.nodes[node];
        let distinct = n.literals.len();
        let through = n.count.max(1) as f64;
        let merge = distinct >= ALWAYS_MERGE_DISTINCT
            || (distinct >= MIN_DISTINCT && distinct as f64 / through >= MIN_DISTINCT_RATIO);
        if merge {
            let literals = std::mem::take(&mut self.nodes[node].literals);
            let mut by_ext: Vec<(String, Vec<(String, usize)>)> = Vec::new();
            for (seg, child) in literals {
                let ext = static_extension(&seg)
                    .map(|e| format!(".{e}"))
                    .unwrap_or_default();
                match by_ext.iter_mut().find(|(e, _)| *e == ext) {
                    Some((_, v)) => v.push((seg, child)),
                    None => by_ext.push((ext, vec![(seg, child)])),
                }
            }
            // Merge order does not change the result (counts add up, children
            // union), so the groups are not sorted: a node may have 100,000 children.
            for (ext, group) in by_ext {
                let name = learned_name(group.iter().map(|(s, _)| s.as_str()));
                let target = self.child_or_insert(node, SegKey::Placeholder(name, ext));
                for (_, child) in group {
                    self.merge_into(target, child);
                }
            }
        }
        let mut children: Vec<usize> = self.nodes[node].literals.values().copied().collect();
        children.extend(self.nodes[node].placeholders.iter().map(|(_, _, c)| *c));
        children.sort_unstable();
        for c in children {
            self.collapse(c);
        }
    }

    /// Moves the subtree at `src` into `dst` (counts added, children merged).
    fn merge_into(&mut self, dst: usize, src: usize) {
        if dst == src {
            return;
        }
        let moved = std::mem::take(&mut self.nodes[src]);
        self.forward[src] = Some(dst);
        self.nodes[dst].count += moved.count;
        if moved.template.is_some() && self.nodes[dst].template.is_none() {
            self.nodes[dst].template = moved.template;
        }
        for (seg, child) in moved.literals {
            match self.nodes[dst].literals.get(&seg) {
                Some(&d) => self.merge_into(d, child),
                None => {
                    self.nodes[dst].literals.insert(seg, child);
                }
            }
        }
        for (name, ext, child) in moved.placeholders {
            let d = self.child_or_insert(dst, SegKey::Placeholder(name, ext));
            self.merge_into(d, child);
        }
    }

    /// Gives every path end a template index and renders it. Indices already
    /// given are kept, so a set extended with new traffic keeps its numbering.
    fn number_templates(&mut self) {
        let mut stack: Vec<(usize, String)> = vec![(0, String::new())];
        let mut fresh: Vec<(usize, String)> = Vec::new();
        while let Some((node, prefix)) = stack.pop() {
            let n = &self.nodes[node];
            match n.template {
                Some(i) if i != u32::MAX && (i as usize) < self.templates.len() => {
                    self.templates[i as usize] = if prefix.is_empty() {
                        "/".into()
                    } else {
                        prefix.clone()
                    };
                }
                Some(_) => fresh.push((node, prefix.clone())),
                None => {}
            }
            let mut kids: Vec<(String, usize)> =
                n.literals.iter().map(|(s, c)| (s.clone(), *c)).collect();
            kids.extend(
                n.placeholders
                    .iter()
                    .map(|(name, ext, c)| (format!("{{{name}}}{ext}"), *c)),
            );
            kids.sort();
            for (seg, c) in kids.into_iter().rev() {
                stack.push((c, format!("{prefix}/{seg}")));
            }
        }
        fresh.sort_by(|a, b| a.1.cmp(&b.1));
        for (node, rendered) in fresh {
            let i = self.templates.len() as u32;
            self.nodes[node].template = Some(i);
            self.templates.push(if rendered.is_empty() {
                "/".into()
            } else {
                rendered
            });
        }
    }
}

fn is_learned(name: &str) -> bool {
    matches!(name, "slug" | "param" | "name")
}

/// `{slug}` for word-like values (dashes, percent-encoded text), `{param}` otherwise.
fn learned_name<'a>(values: impl Iterator<Item = &'a str>) -> String {
    let (mut n, mut wordy) = (0usize, 0usize);
    for v in values {
        n += 1;
        if v.contains('-') || v.contains('%') || v.contains('_') || v.contains(',') {
            wordy += 1;
        }
    }
    if wordy * 2 >= n {
        "slug".into()
    } else {
        "param".into()
    }
}

fn parse_rendered(seg: &str) -> SegKey {
    if let Some(rest) = seg.strip_prefix('{')
        && let Some(close) = rest.find('}')
    {
        let name = &rest[..close];
        let ext = &rest[close + 1..];
        if !name.is_empty() && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
            return SegKey::Placeholder(name.to_string(), ext.to_string());
        }
    }
    SegKey::Literal(seg.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert_eq!(segment_kind("8812"), Some("id"));
        assert_eq!(
            segment_kind("3f2a5c1e-9b7d-4e2f-8a6b-1c2d3e4f5a6b"),
            Some("uuid")
        );
        assert_eq!(
            segment_kind("d41d8cd98f00b204e9800998ecf8427e"),
            Some("hash")
        );
        assert_eq!(segment_kind("5f1b2c3d4e5f6a7b"), Some("hex"));
        assert_eq!(segment_kind("2019-01-22"), Some("date"));
        assert_eq!(segment_kind("jane.doe@example.com"), Some("email"));
        assert_eq!(segment_kind("jane%40example.com"), Some("email"));
        assert_eq!(segment_kind("eyJhbGciOiJIUzI1NiJ9x1x2x3x4"), Some("token"));
        assert_eq!(segment_kind("users"), None);
        assert_eq!(segment_kind("v2"), None);
        assert_eq!(segment_kind("200x200"), None);
        assert_eq!(segment_kind("samsung-galaxy-s10-black-edition"), None);
        assert_eq!(
            segment_kind("cafe"),
            None,
            "short hex-looking words stay literal"
        );
    }

    #[test]
    fn pattern_template_keeps_extension() {
        assert_eq!(
            Templater::pattern_template("/users/8812/orders/3f2a5c1e-9b7d-4e2f-8a6b-1c2d3e4f5a6b"),
            "/users/{id}/orders/{uuid}"
        );
        assert_eq!(Templater::pattern_template("/img/123.jpg"), "/img/{id}.jpg");
        assert_eq!(Templater::pattern_template("/"), "/");
    }

    #[test]
    fn learns_variable_positions() {
        let mut paths: Vec<String> = Vec::new();
        for i in 0..50 {
            paths.push(format!("/product/{i}/nice-thing-{i}"));
            paths.push("/about".to_string());
            paths.push("/cart".to_string());
        }
        for i in 0..30 {
            paths.push(format!("/static/file{i}.js"));
            paths.push(format!("/static/file{i}.css"));
        }
        let t = Templater::learn(paths.iter().map(String::as_str));
        let names: Vec<&str> = t.templates().iter().map(String::as_str).collect();
        assert!(names.contains(&"/product/{id}/{slug}"), "{names:?}");
        assert!(names.contains(&"/about"), "{names:?}");
        assert!(names.contains(&"/static/{param}.js"), "{names:?}");
        assert!(names.contains(&"/static/{param}.css"), "{names:?}");
        let mut again = Templater::default();
        let ids = again.extend_and_template(paths.iter().map(String::as_str));
        for (p, id) in paths.iter().zip(ids) {
            let m = t.template_of(p).unwrap();
            assert_eq!(t.template(m.template), again.template(id), "{p}");
        }
        let m = t.template_of("/product/77/other-thing").unwrap();
        assert_eq!(t.template(m.template), "/product/{id}/{slug}");
        assert_eq!(m.values, vec!["77", "other-thing"]);
        assert!(t.template_of("/unknown").is_none());
    }

    #[test]
    fn few_distinct_children_stay_literal() {
        let mut paths = Vec::new();
        for _ in 0..100 {
            for p in [
                "/a", "/b", "/c", "/d", "/e", "/f", "/g", "/h", "/i", "/j", "/k",
            ] {
                paths.push(p.to_string());
            }
        }
        let t = Templater::learn(paths.iter().map(String::as_str));
        assert_eq!(t.len(), 11, "{:?}", t.templates());
    }

    #[test]
    fn round_trips_through_rendered_templates() {
        let paths: Vec<String> = (0..40).map(|i| format!("/u/{i}/p/w-{i}")).collect();
        let t = Templater::learn(paths.iter().map(String::as_str));
        let back = Templater::from_templates(t.templates().iter().map(String::as_str));
        assert_eq!(back.templates(), t.templates());
        let m = back.template_of("/u/9/p/anything").unwrap();
        assert_eq!(back.template(m.template), "/u/{id}/p/{slug}");
        assert_eq!(m.values, ["9", "anything"]);
        assert_eq!(back.template_index("/u/9/p/anything"), Some(m.template));
        assert_eq!(back.template_index("/u/9/q/anything"), None);
    }

    #[test]
    fn extend_keeps_numbering() {
        let paths: Vec<String> = (0..40).map(|i| format!("/u/{i}")).collect();
        let mut t = Templater::learn(paths.iter().map(String::as_str));
        let before = t.templates().to_vec();
        let more: Vec<String> = (0..40).map(|i| format!("/new/x-{i}")).collect();
        t.extend(more.iter().map(String::as_str));
        assert_eq!(&t.templates()[..before.len()], &before[..]);
        assert!(
            t.templates().contains(&"/new/{slug}".to_string()),
            "{:?}",
            t.templates()
        );
    }
}
