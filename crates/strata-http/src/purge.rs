//! Purging: by URL, by tag, by path prefix; hard (removed) or soft (marked stale).

use serde::{Deserialize, Serialize};
use strata::{Error, Result};

use crate::http_cache::HttpCache;
use crate::key::{prefix_tag, url_tag};
use crate::stored::unix_us;

/// What to purge: the body of `POST /_strata/purge`.
///
/// ```
/// let purge: strata_http::Purge =
///     serde_json::from_str(r#"{"tags":["product:42"],"soft":true}"#).unwrap();
/// assert!(purge.soft && purge.urls.is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Purge {
    /// URLs (absolute, or a path with its query): every stored variant of each.
    pub urls: Vec<String>,
    /// Tags, as the origin set them (`Surrogate-Key`, `Cache-Tag`, `Cache-Groups`) or as a
    /// service passed them to `invalidate_tag`.
    pub tags: Vec<String>,
    /// Path prefixes, by whole segments: `/products` covers `/products` and `/products/…`.
    pub prefixes: Vec<String>,
    /// Mark stale instead of removing: the next request revalidates, and
    /// `stale-while-revalidate` / `stale-if-error` may still serve the old response.
    pub soft: bool,
}

/// At most this many targets per purge request.
pub const MAX_PURGE_TARGETS: usize = 1000;

impl Purge {
    /// Nothing to purge.
    pub fn is_empty(&self) -> bool {
        self.urls.is_empty() && self.tags.is_empty() && self.prefixes.is_empty()
    }
}

impl HttpCache {
    /// Purges what `purge` names, on every instance sharing this cache's L2 and log. URLs are
    /// read with this route's key policy (its kept query parameters). Returns how many
    /// targets were purged.
    ///
    /// Fails with [`Error::Config`] on a malformed target (nothing is purged then).
    pub async fn purge(&self, purge: &Purge) -> Result<usize> {
        let tags = self.purge_tags(purge)?;
        let shared = &self.shared;
        let now = unix_us(std::time::SystemTime::now());
        for tag in &tags {
            if purge.soft {
                shared.soft_purge(tag, now).await?;
            } else {
                shared.cache.invalidate_tag(tag).await?;
            }
        }
        Ok(tags.len())
    }

    /// The tags a purge comes down to; every target is checked before anything is purged.
    pub fn purge_tags(&self, purge: &Purge) -> Result<Vec<String>> {
        let count = purge.urls.len() + purge.tags.len() + purge.prefixes.len();
        if count > MAX_PURGE_TARGETS {
            return Err(Error::Config(format!(
                "purge names {count} targets, over the limit of {MAX_PURGE_TARGETS}"
            )));
        }
        let mut tags = Vec::with_capacity(count);
        for url in &purge.urls {
            let uri: http::Uri = url
                .parse()
                .map_err(|e| Error::Config(format!("purge url {url:?}: {e}")))?;
            if !uri.path().starts_with('/') {
                return Err(Error::Config(format!("purge url {url:?}: no path")));
            }
            let query = self.shared.policy.key.query_key().filter(uri.query());
            tags.push(url_tag(uri.path(), query.as_deref()));
        }
        for tag in &purge.tags {
            if tag.is_empty() || tag.len() > crate::tags::MAX_TAG_BYTES {
                return Err(Error::Config(format!(
                    "purge tag {tag:?}: empty or over {} bytes",
                    crate::tags::MAX_TAG_BYTES
                )));
            }
            tags.push(tag.clone());
        }
        for prefix in &purge.prefixes {
            if !prefix.starts_with('/') {
                return Err(Error::Config(format!(
                    "purge prefix {prefix:?}: must start with `/`"
                )));
            }
            tags.push(prefix_tag(prefix).ok_or_else(|| {
                Error::Config(format!(
                    "purge prefix {prefix:?}: deeper than {} segments",
                    crate::key::MAX_PREFIX_DEPTH
                ))
            })?);
        }
        Ok(tags)
    }
}
