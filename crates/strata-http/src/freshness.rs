//! Freshness (RFC 9111 §4.2): how long a stored response is fresh, and how old it is.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use http::header::{AGE, DATE, EXPIRES};

use crate::cache_control::{CacheControl, seconds};

/// The freshness lifetime of a response for a **shared** cache (§4.2.1): `s-maxage`, else
/// `max-age`, else `Expires` − `Date`. `None` when the response gives none: heuristic
/// freshness (§4.2.2) is off, so such a response is stale as soon as it is stored.
///
/// An `Expires` that is not a valid HTTP-date means "already expired" (§5.3).
pub fn freshness_lifetime(cc: &CacheControl, headers: &HeaderMap) -> Option<Duration> {
    if let Some(s) = cc.s_maxage.or(cc.max_age) {
        return Some(Duration::from_secs(s));
    }
    let expires = headers.get(EXPIRES)?;
    let Some(expires) = http_date(expires) else {
        return Some(Duration::ZERO);
    };
    // Without a (valid) Date, the time the response was received serves (§4.2.1); the
    // caller passes that as `Date` when it stores the response.
    let date = headers.get(DATE).and_then(http_date)?;
    Some(expires.duration_since(date).unwrap_or(Duration::ZERO))
}

/// The current age of a stored response (§4.2.3), from its `Age` and `Date` and when it was
/// requested and received.
pub fn current_age(
    headers: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
    now: SystemTime,
) -> Duration {
    // §5.1: of a list, the first member; anything but digits (`+5`, `-1`, `1.5`, `ten`)
    // makes the field ignored.
    let age_value = headers
        .get(AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| seconds(v.split(',').next().unwrap_or("").trim()))
        .map_or(Duration::ZERO, Duration::from_secs);
    let date = headers
        .get(DATE)
        .and_then(http_date)
        .unwrap_or(response_time);
    let apparent_age = response_time.duration_since(date).unwrap_or(Duration::ZERO);
    let response_delay = response_time
        .duration_since(request_time)
        .unwrap_or(Duration::ZERO);
    let corrected_age_value = age_value + response_delay;
    let corrected_initial_age = apparent_age.max(corrected_age_value);
    let resident_time = now.duration_since(response_time).unwrap_or(Duration::ZERO);
    corrected_initial_age + resident_time
}

/// A header value as an HTTP-date (IMF-fixdate, or the two obsolete forms).
pub fn http_date(value: &http::HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(value.to_str().ok()?.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http::header::CACHE_CONTROL;

    fn headers(pairs: &[(http::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        h
    }

    fn lifetime(pairs: &[(http::HeaderName, &str)]) -> Option<Duration> {
        let h = headers(pairs);
        freshness_lifetime(&CacheControl::from_headers(&h), &h)
    }

    #[test]
    fn s_maxage_over_max_age_over_expires() {
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        let expires = "Sun, 06 Nov 1994 08:59:37 GMT";
        assert_eq!(
            lifetime(&[
                (CACHE_CONTROL, "max-age=60, s-maxage=5"),
                (DATE, date),
                (EXPIRES, expires)
            ]),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            lifetime(&[
                (CACHE_CONTROL, "max-age=60"),
                (DATE, date),
                (EXPIRES, expires)
            ]),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            lifetime(&[(DATE, date), (EXPIRES, expires)]),
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            lifetime(&[(DATE, date), (EXPIRES, "0")]),
            Some(Duration::ZERO)
        );
        assert_eq!(lifetime(&[(DATE, date)]), None, "no heuristic freshness");
    }

    #[test]
    fn age_counts_the_upstream_age_the_delay_and_the_time_stored() {
        let t0 = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let h = headers(&[(DATE, "Sun, 06 Nov 1994 08:49:37 GMT"), (AGE, "10")]);
        let sent = t0;
        let received = t0 + Duration::from_secs(2);
        let now = received + Duration::from_secs(30);
        // corrected_initial_age = max(apparent 2, 10 + delay 2) = 12; + resident 30.
        assert_eq!(
            current_age(&h, sent, received, now),
            Duration::from_secs(42)
        );
        for bad in ["ten", "+10", "-10", "1.5", "10s", "", ", 10"] {
            let bad_age = headers(&[(AGE, bad)]);
            assert_eq!(
                current_age(&bad_age, received, received, now),
                Duration::from_secs(30),
                "Age: {bad:?} is ignored"
            );
        }
        // A list: its first member; an overflow: the largest delta-seconds.
        let list = headers(&[(AGE, "10, 20")]);
        assert_eq!(
            current_age(&list, received, received, now),
            Duration::from_secs(40)
        );
        let huge = headers(&[(AGE, "99999999999999999999999")]);
        assert_eq!(
            current_age(&huge, received, received, received),
            Duration::from_secs(2_147_483_648)
        );
    }
}
