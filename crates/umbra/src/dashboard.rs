//! The dashboard on the admin port: one page, its script and its style sheet,
//! embedded in the binary (`dashboard/`), so it works where the proxy has no
//! network beyond its own port. The page polls `/api/stats`, `/api/analysis`,
//! `/api/alerts`, `/api/canary` and `/api/capacity` and draws everything in the
//! browser (vanilla JS, inline SVG): the server side is static files.
//!
//! The script lives in its own file rather than inline so that the
//! Content-Security-Policy can forbid inline script: a profile name learned
//! from a log that carries markup could not run even if it reached the DOM as
//! markup (the script only ever sets text, see `app.js`).

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// Where the page finds its script and style sheet (`admin.rs` serves them there).
pub const SCRIPT_PATH: &str = "/dashboard/app.js";
pub const STYLE_PATH: &str = "/dashboard/app.css";

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/app.css");

/// Nothing from anywhere but the admin port, no inline script, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /` and `GET /dashboard`.
pub async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Revalidate: after an upgrade the page and its script must match.
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SVG namespace is a name, not an address anything fetches.
    const SVG_NS: &str = "http://www.w3.org/2000/svg";

    fn assets() -> [(&'static str, &'static str); 3] {
        [("index.html", PAGE), ("app.js", SCRIPT), ("app.css", STYLE)]
    }

    #[test]
    fn nothing_is_fetched_from_another_host() {
        for (name, text) in assets() {
            let text = text.replace(SVG_NS, "");
            let lower = text.to_ascii_lowercase();
            for needle in ["http://", "https://", "ws://", "wss://"] {
                assert!(!lower.contains(needle), "{name} contains {needle}");
            }
            // What makes a style sheet fetch (the script's `safeUrl(` is not CSS).
            if name != "app.js" {
                for needle in ["url(", "@import", "@font-face"] {
                    assert!(!lower.contains(needle), "{name} contains {needle}");
                }
            }
            // Protocol-relative addresses (`//host/x`) in attributes or fetches.
            for needle in ["=\"//", "='//", "(\"//", "('//", "(`//"] {
                assert!(!lower.contains(needle), "{name} contains {needle}");
            }
        }
        // The page loads exactly its own two assets.
        let refs: Vec<&str> = PAGE
            .split(['"', '\''])
            .filter(|s| s.starts_with('/'))
            .collect();
        assert_eq!(refs, [STYLE_PATH, SCRIPT_PATH], "{PAGE}");
        // Every path the script names is one of the admin API's.
        for part in SCRIPT.split("'/").skip(1) {
            if part.starts_with(|c: char| c.is_ascii_alphabetic()) {
                assert!(part.starts_with("api/"), "script refers to /{part:.40}");
            }
        }
    }

    #[test]
    fn the_script_never_parses_data_as_markup() {
        for needle in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "DOMParser",
            "createContextualFragment",
        ] {
            assert!(!SCRIPT.contains(needle), "app.js uses {needle}");
        }
        // Inline handlers and inline script are refused by the policy; none are needed.
        let lower = PAGE.to_ascii_lowercase();
        for part in lower.split(" on").skip(1) {
            let name: String = part.chars().take_while(char::is_ascii_alphabetic).collect();
            assert!(
                !part[name.len()..].starts_with('='),
                "inline handler on{name}"
            );
        }
        assert_eq!(lower.matches("<script").count(), 1);
        assert!(lower.contains("<script src=\"/dashboard/app.js\""));
    }

    #[tokio::test]
    async fn assets_are_served_with_their_types_and_the_policy() {
        for (response, kind) in [
            (page().await, "text/html"),
            (script().await, "text/javascript"),
            (style().await, "text/css"),
        ] {
            let h = response.headers();
            assert!(
                h[header::CONTENT_TYPE]
                    .to_str()
                    .unwrap_or("")
                    .starts_with(kind)
            );
            let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap_or("");
            assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
            assert!(!csp.contains("unsafe-inline"));
        }
    }
}
