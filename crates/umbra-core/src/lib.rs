//! Umbra's shared vocabulary.
//!
//! Every stage of Umbra passes plain values to the next: readers produce
//! [`RequestRecord`]s, `umbra learn` turns them into a [`ProfileSet`], and the load
//! generator and the proxy read that set back. This crate holds those values and
//! nothing that acts on them, so that every other crate can depend on it.

#![forbid(unsafe_code)]

pub mod profile;
pub mod quantiles;
pub mod record;

pub use profile::{
    ClusteringInfo, FeatureSpace, HeaderSpec, PROFILE_FORMAT, PROFILE_VERSION, ParamSpec, Profile,
    ProfileFileError, ProfileSet, QuerySpec, RequestTemplate, SourceSummary, Weighted,
};
pub use quantiles::Quantiles;
pub use record::{CREDENTIAL_HEADERS, RequestRecord, StatusClass, UaClass, is_credential_header};
