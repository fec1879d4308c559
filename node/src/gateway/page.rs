//! The catalogue page at `/`: the configured creators' live objects, each playable.

use super::{full, Body, Gateway, GatewayError};
use crate::client::holders::margin;
use crate::client::manifest_of;
use crate::config::units::format_size;
use atlas_protocol::escrow::Deal;
use atlas_protocol::wire::DealQuery;
use hyper::header::{self, HeaderValue};
use hyper::Response;

const PAGE: &str = include_str!("page.html");

impl Gateway {
    /// The catalogue page.
    pub(super) async fn page(&self) -> Result<Response<Body>, GatewayError> {
        let status = self.ledger.status().await?;
        let mut rows = String::new();
        let mut count = 0;
        for creator in &self.config.creators {
            let deals = self.ledger.deals(DealQuery::OfCreator(*creator)).await?;
            for (_, d) in deals.iter().filter(|(_, d)| !d.ended) {
                rows.push_str(&catalogue_entry(d)?);
                count += 1;
            }
        }
        if count == 0 {
            rows.push_str("<p class=\"empty\">Nothing pinned yet. Pin a video with <code>atlas pin FILE</code> and reload.</p>");
        }
        let html = PAGE
            .replace("{{height}}", &status.height.to_string())
            .replace("{{epoch}}", &status.epoch.to_string())
            .replace("{{count}}", &count.to_string())
            .replace("{{rows}}", &rows);
        let mut r = Response::new(full(html.into_bytes()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(r)
    }
}

/// One catalogue entry: title, size, health, escrow left, and a player.
fn catalogue_entry(d: &Deal) -> Result<String, GatewayError> {
    let m = manifest_of(d)?;
    let margin = margin(d)?;
    let health = if margin >= 0 {
        format!("{margin} more holder(s) may be lost")
    } else {
        format!("{} slot(s) short of readable", -margin)
    };
    let id = d.terms.object.to_string();
    let media = &m.manifest().media_type;
    let player = if media.starts_with("video/") {
        format!("<video controls preload=\"metadata\" src=\"/v1/objects/{id}\"></video>")
    } else if media.starts_with("audio/") {
        format!("<audio controls preload=\"metadata\" src=\"/v1/objects/{id}\"></audio>")
    } else {
        String::new()
    };
    Ok(format!(
        "<article class=\"object\" data-id=\"{id}\"><h2>{title}</h2>{player}<dl>\
         <dt>size</dt><dd>{size}</dd><dt>code</dt><dd>{k}+{mm}</dd>\
         <dt>health</dt><dd class=\"{class}\">{health}</dd>\
         <dt>escrow left</dt><dd>{covered} epochs (until epoch {end})</dd>\
         <dt>object</dt><dd><a href=\"/v1/objects/{id}\"><code>{short}</code></a></dd></dl></article>\n",
        title = escape_html(&m.manifest().name),
        size = format_size(m.manifest().size),
        k = m.layout().data_shards(),
        mm = m.layout().parity_shards(),
        class = if margin > 0 { "ok" } else { "warn" },
        covered = d.epochs_covered(),
        end = d.end_epoch,
        short = d.terms.object.short(),
    ))
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_escaped() {
        assert_eq!(
            escape_html("<b>\"Tom & Jerry's\"</b>"),
            "&lt;b&gt;&quot;Tom &amp; Jerry&#39;s&quot;&lt;/b&gt;"
        );
    }
}
