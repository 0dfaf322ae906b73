//! The profile set: the file `umbra learn` writes and the load generator and the
//! proxy read. Its layout is documented in the README ("The profile file"); any
//! change to it that an older reader would misread bumps [`PROFILE_VERSION`].

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::quantiles::Quantiles;

/// The value of the `format` field, so a stray JSON file is told apart from a profile set.
pub const PROFILE_FORMAT: &str = "umbra-profiles";
/// The version this build writes and reads.
pub const PROFILE_VERSION: u32 = 1;

/// A set of request profiles learned from traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileSet {
    /// Always [`PROFILE_FORMAT`].
    pub format: String,
    /// Always [`PROFILE_VERSION`] for files this build writes.
    pub version: u32,
    /// When the file was written (RFC 3339).
    pub generated_at: String,
    /// Timestamp (ms since the epoch) of the newest request folded in; decay is measured from it.
    pub as_of_ms: Option<i64>,
    /// Half-life of the exponential decay used by `learn --update`, in seconds.
    pub half_life_secs: Option<f64>,
    /// A profile whose share decays below this retires on update.
    pub retire_below: f64,
    /// The baseline request rate of the whole set, in requests per second.
    pub baseline_rps: f64,
    /// Multiplier applied to the baseline rate (1.0 = baseline, 3.0 = three times the traffic).
    pub stress: f64,
    /// What the set was learned from.
    pub sources: Vec<SourceSummary>,
    /// How the clusters were found.
    pub clustering: ClusteringInfo,
    /// How requests are turned into feature vectors; centroids live in this space.
    pub features: FeatureSpace,
    pub profiles: Vec<Profile>,
}

/// One input that went into the set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceSummary {
    pub name: String,
    /// The format that was read (`combined`, `nginx:...`, `jsonl`, `har`).
    pub format: String,
    pub records: u64,
    pub bad: u64,
    /// Time range of the records, ms since the epoch.
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
}

/// How k was chosen and how good the clustering is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusteringInfo {
    pub k: usize,
    /// `fixed` (given with `--k N`) or `silhouette` (chosen by `--k auto`).
    pub k_choice: String,
    /// Why this k: the score of each candidate, in words.
    pub reason: String,
    /// Silhouette of the final clustering on a sample, when computed.
    pub silhouette: Option<f64>,
    /// Sum of squared distances to the nearest centroid, over all requests.
    pub inertia: f64,
    pub restarts: usize,
    pub seed: u64,
}

/// The description of the feature vector. `umbra-learn` builds and interprets it;
/// it is stored so that a set can classify new requests exactly as it was learned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSpace {
    /// One name per dimension (`method=GET`, `log_response_bytes`, ...).
    pub names: Vec<String>,
    /// Per dimension: the value subtracted before scaling.
    pub center: Vec<f64>,
    /// Per dimension: the value divided by after centering (1 for one-hot dimensions).
    pub scale: Vec<f64>,
    /// Categorical vocabularies (`first_segment` -> the segments that get their own dimension).
    pub vocab: BTreeMap<String, Vec<String>>,
}

/// One behavioural group of requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Stable across updates: derived from the profile's dominant template, kept when the profile is updated.
    pub id: String,
    /// Readable: `GET /product/{id} · browser · small`.
    pub name: String,
    /// The learned share of traffic, in [0, 1]; the shares of a set sum to 1.
    pub share: f64,
    /// A user override of the share (relative; the mix is normalised over the set). Absent = use `share`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// The decayed number of requests behind `share`.
    pub mass: f64,
    /// The cluster centre in the feature space.
    pub centroid: Vec<f64>,
    /// Root-mean-square distance of the members to the centroid.
    pub spread: f64,
    /// Share of each user-agent class (`browser`, `bot`, ...).
    pub user_agent_classes: BTreeMap<String, f64>,
    /// Share of each status class (`2xx`, ...).
    pub status_classes: BTreeMap<String, f64>,
    /// The requests inside the profile, heaviest first.
    pub templates: Vec<RequestTemplate>,
}

/// One kind of request inside a profile: a method and a path template with the
/// shapes of everything around them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestTemplate {
    pub method: String,
    /// `/users/{id}/orders/{uuid}`.
    pub path: String,
    /// Share of the profile's requests, in [0, 1].
    pub weight: f64,
    /// The placeholders of `path`, in order.
    pub params: Vec<ParamSpec>,
    /// Query keys seen with this template.
    pub query: Vec<QuerySpec>,
    /// Typical request headers (names lower-case) and how often they were present.
    pub headers: Vec<HeaderSpec>,
    /// User agents seen, heaviest first (a few).
    pub user_agents: Vec<Weighted<String>>,
    /// The request content type, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Request body size in bytes.
    pub request_bytes: Quantiles,
    /// Response body size in bytes.
    pub response_bytes: Quantiles,
    /// Latency in milliseconds, when the source logs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<Quantiles>,
    /// Share of each status code.
    pub status: BTreeMap<String, f64>,
}

/// A placeholder in a path template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamSpec {
    /// The placeholder's name as it appears in the path (`id`, `uuid`, `slug`...).
    pub name: String,
    /// Example values, with personal data replaced by shape-preserving fakes.
    pub examples: Vec<String>,
}

/// A query key and the shape of its values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuerySpec {
    pub key: String,
    /// Share of the template's requests that carried it.
    pub presence: f64,
    /// The generalised value kind (`id`, `text`, `uuid`...).
    pub kind: String,
    /// Example values (faked where personal).
    pub examples: Vec<String>,
}

/// A request header seen with a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeaderSpec {
    pub name: String,
    pub presence: f64,
    /// The commonest value, unless the header carries credentials (then absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<String>,
}

/// A value with its share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Weighted<T> {
    pub value: T,
    pub weight: f64,
}

/// Why a profile file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileFileError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} line {line} column {column}: not a valid profile set: {message}")]
    Json {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "{path}: format is {found:?}, expected {PROFILE_FORMAT:?} (is this a profile file written by `umbra learn`?)"
    )]
    WrongFormat { path: String, found: String },
    #[error(
        "{path}: profile format version {found} is not supported by this build (it reads version {PROFILE_VERSION})"
    )]
    WrongVersion { path: String, found: u32 },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl ProfileSet {
    /// Reads and validates a profile file.
    pub fn load(path: &Path) -> Result<ProfileSet, ProfileFileError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ProfileFileError::Io {
            path: name.clone(),
            source,
        })?;
        ProfileSet::from_json(&name, &text)
    }

    /// Parses and validates a profile set; `name` is used in error messages.
    pub fn from_json(name: &str, text: &str) -> Result<ProfileSet, ProfileFileError> {
        // Check the envelope first so a wrong file or version gets the right message.
        #[derive(Deserialize)]
        struct Envelope {
            format: Option<String>,
            version: Option<u32>,
        }
        let json_err = |e: serde_json::Error| ProfileFileError::Json {
            path: name.to_string(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        };
        let env: Envelope = serde_json::from_str(text).map_err(json_err)?;
        let format = env.format.unwrap_or_default();
        if format != PROFILE_FORMAT {
            return Err(ProfileFileError::WrongFormat {
                path: name.to_string(),
                found: format,
            });
        }
        match env.version {
            Some(PROFILE_VERSION) => {}
            other => {
                return Err(ProfileFileError::WrongVersion {
                    path: name.to_string(),
                    found: other.unwrap_or(0),
                });
            }
        }
        let set: ProfileSet = serde_json::from_str(text).map_err(json_err)?;
        set.validate()
            .map_err(|message| ProfileFileError::Invalid {
                path: name.to_string(),
                message,
            })?;
        Ok(set)
    }

    /// Serialises the set as pretty JSON.
    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks the invariants readers rely on; the message names the offending profile and field.
    pub fn validate(&self) -> Result<(), String> {
        let dims = self.features.names.len();
        if self.features.center.len() != dims || self.features.scale.len() != dims {
            return Err(format!(
                "features: {} names but {} centers and {} scales",
                dims,
                self.features.center.len(),
                self.features.scale.len()
            ));
        }
        if !(self.baseline_rps.is_finite() && self.baseline_rps >= 0.0) {
            return Err(format!(
                "baseline_rps is {}, expected a number >= 0",
                self.baseline_rps
            ));
        }
        if !(self.stress.is_finite() && self.stress >= 0.0) {
            return Err(format!("stress is {}, expected a number >= 0", self.stress));
        }
        if self.profiles.is_empty() {
            return Err("profiles: the set has no profiles".to_string());
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, p) in self.profiles.iter().enumerate() {
            let at = format!("profiles[{i}] (id {:?})", p.id);
            if p.id.is_empty() {
                return Err(format!("profiles[{i}]: empty id"));
            }
            if !seen.insert(p.id.as_str()) {
                return Err(format!("{at}: duplicate id"));
            }
            if p.centroid.len() != dims {
                return Err(format!(
                    "{at}: centroid has {} values, the feature space has {dims}",
                    p.centroid.len()
                ));
            }
            if !(p.share.is_finite() && (0.0..=1.0 + 1e-9).contains(&p.share)) {
                return Err(format!(
                    "{at}: share is {}, expected a number in [0, 1]",
                    p.share
                ));
            }
            if let Some(w) = p.weight
                && !(w.is_finite() && w >= 0.0)
            {
                return Err(format!("{at}: weight is {w}, expected a number >= 0"));
            }
            if p.templates.is_empty() {
                return Err(format!("{at}: no request templates"));
            }
            for (j, t) in p.templates.iter().enumerate() {
                if !t.path.starts_with('/') {
                    return Err(format!(
                        "{at}: templates[{j}]: path {:?} does not start with '/'",
                        t.path
                    ));
                }
            }
        }
        if self.mix_total() <= 0.0 {
            return Err("every profile has weight 0: nothing to send".to_string());
        }
        Ok(())
    }

    fn mix_total(&self) -> f64 {
        self.profiles.iter().map(Profile::effective_weight).sum()
    }

    /// The traffic mix: each profile's fraction of requests, using user weights where
    /// set and learned shares otherwise, normalised to sum to 1.
    pub fn mix(&self) -> Vec<(&Profile, f64)> {
        let total = self.mix_total();
        self.profiles
            .iter()
            .map(|p| {
                (
                    p,
                    if total > 0.0 {
                        p.effective_weight() / total
                    } else {
                        0.0
                    },
                )
            })
            .collect()
    }

    /// The total request rate the set asks for: baseline times stress.
    pub fn target_rps(&self) -> f64 {
        self.baseline_rps * self.stress
    }

    /// Finds a profile by id, or by name when no id matches.
    pub fn find(&self, key: &str) -> Option<&Profile> {
        self.profiles
            .iter()
            .find(|p| p.id == key)
            .or_else(|| self.profiles.iter().find(|p| p.name == key))
    }
}

impl Profile {
    /// The user's weight when set, the learned share otherwise.
    pub fn effective_weight(&self) -> f64 {
        self.weight.unwrap_or(self.share)
    }
}
