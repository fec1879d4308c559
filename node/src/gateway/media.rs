//! What an object is served as. A manifest's media type is the creator's word, and nothing
//! served here may run as a page of the gateway's origin.

use hyper::header::HeaderValue;

/// The policy on every object response: no scripts, no plugins, no subresources, a unique origin.
pub(super) const OBJECT_CSP: &str = "default-src 'none'; media-src 'self'; sandbox";

/// The `Content-Type` an object is served with. A manifest's media type is the creator's word, so
/// only plain video, audio and raster image types are passed on; anything else (HTML, SVG, XML,
/// script, or text that is not a media type) is served as `application/octet-stream`, which no
/// browser renders as a page.
pub(super) fn served_media_type(claimed: &str) -> HeaderValue {
    const FALLBACK: HeaderValue = HeaderValue::from_static("application/octet-stream");
    let essence = claimed
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let Some((kind, sub)) = essence.split_once('/') else {
        return FALLBACK;
    };
    let token = |t: &str| {
        !t.is_empty()
            && t.len() <= 64
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    let allowed = matches!(kind, "video" | "audio" | "image")
        && token(sub)
        && !sub.contains("svg")
        && !sub.contains("xml");
    if allowed {
        HeaderValue::from_str(&essence).unwrap_or(FALLBACK)
    } else {
        FALLBACK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_media_types_are_served_as_such() {
        for (claimed, served) in [
            ("video/mp4", "video/mp4"),
            ("Video/MP4; codecs=\"avc1\"", "video/mp4"),
            ("audio/ogg", "audio/ogg"),
            ("image/png", "image/png"),
            ("text/html", "application/octet-stream"),
            ("text/html; charset=utf-8", "application/octet-stream"),
            ("image/svg+xml", "application/octet-stream"),
            ("application/xhtml+xml", "application/octet-stream"),
            ("application/javascript", "application/octet-stream"),
            ("video/mp4\r\nSet-Cookie: a=b", "application/octet-stream"),
            ("video/", "application/octet-stream"),
            ("nonsense", "application/octet-stream"),
        ] {
            assert_eq!(served_media_type(claimed), served, "{claimed:?}");
        }
    }
}
