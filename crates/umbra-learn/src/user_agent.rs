//! User-agent classes: browser, mobile, bot/crawler, API client/SDK, CLI tool.
//!
//! Substring rules in a fixed order, the order that matters: crawlers announce
//! themselves inside browser-looking strings (`Mozilla/5.0 (compatible; bingbot/2.0)`),
//! so bots are checked first, then tools and libraries, then mobile, then browsers.

use umbra_core::UaClass;

const BOT: &[&str] = &[
    "bot",
    "crawler",
    "spider",
    "slurp",
    "crawl",
    "facebookexternalhit",
    "mediapartners",
    "archiver",
    "scrapy",
    "headlesschrome",
    "phantomjs",
    "lighthouse",
    "pingdom",
    "uptime",
    "monitor",
    "feedfetcher",
    "python-urllib",
    "yandex",
    "baidu",
    "bingpreview",
    "validator",
];
const CLI: &[&str] = &[
    "curl/",
    "wget/",
    "httpie/",
    "lwp-request",
    "powershell",
    "aria2/",
    "xh/",
];
const API: &[&str] = &[
    "okhttp",
    "python-requests",
    "python-httpx",
    "aiohttp",
    "go-http-client",
    "axios",
    "node-fetch",
    "undici",
    "java/",
    "apache-httpclient",
    "jersey",
    "libwww-perl",
    "ruby",
    "faraday",
    "restsharp",
    "guzzle",
    "postmanruntime",
    "insomnia",
    "dart:io",
    "reqwest",
    "hyper/",
    "grpc",
    "k6/",
    "wrk",
    "apachebench",
    "umbra-load",
    "elastic",
    "kube-probe",
    "prometheus",
    "envoy",
    "aws-sdk",
    "google-api",
    "azure-sdk",
];
const MOBILE: &[&str] = &[
    "mobile",
    "android",
    "iphone",
    "ipad",
    "ipod",
    "opera mini",
    "windows phone",
    "blackberry",
    "dalvik",
    "cfnetwork",
    "kaios",
];

/// Classifies a user agent; `None`, empty and `-` are [`UaClass::Unknown`].
pub fn classify(ua: Option<&str>) -> UaClass {
    let ua = match ua {
        Some(s) if !s.is_empty() && s != "-" => s,
        _ => return UaClass::Unknown,
    };
    let lower = ua.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    if has(BOT) {
        UaClass::Bot
    } else if has(CLI) {
        UaClass::Cli
    } else if has(API) {
        UaClass::Api
    } else if has(MOBILE) {
        UaClass::Mobile
    } else if lower.starts_with("mozilla/") || lower.starts_with("opera/") {
        UaClass::Browser
    } else {
        UaClass::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let cases = [
            (
                "Mozilla/5.0 (compatible; AhrefsBot/6.1; +http://ahrefs.com/robot/)",
                UaClass::Bot,
            ),
            (
                "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
                UaClass::Bot,
            ),
            ("Googlebot-Image/1.0", UaClass::Bot),
            (
                "Mozilla/5.0 (Linux; Android 6.0; ALE-L21 Build/HuaweiALE-L21) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/66.0.3359.158 Mobile Safari/537.36",
                UaClass::Mobile,
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 12_1 like Mac OS X) AppleWebKit/605.1.15",
                UaClass::Mobile,
            ),
            (
                "Mozilla/5.0 (Windows NT 6.2; Win64; x64; rv:16.0)Gecko/16.0 Firefox/16.0",
                UaClass::Browser,
            ),
            ("curl/8.5.0", UaClass::Cli),
            ("Wget/1.21", UaClass::Cli),
            ("python-requests/2.31.0", UaClass::Api),
            ("okhttp/4.9.0", UaClass::Api),
            ("Go-http-client/1.1", UaClass::Api),
            ("-", UaClass::Unknown),
            ("", UaClass::Unknown),
            ("SomethingElse", UaClass::Unknown),
        ];
        for (ua, want) in cases {
            assert_eq!(classify(Some(ua)), want, "{ua}");
        }
        assert_eq!(classify(None), UaClass::Unknown);
    }
}
