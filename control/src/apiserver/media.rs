//! Accept headers: the media ranges a client lists, with the `g`, `v` and `as` parameters
//! Kubernetes uses to ask for a different rendering of the same resource (a Table, the aggregated
//! discovery list).

/// One media range of an Accept header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range<'a> {
    /// Whether it accepts JSON (`application/json`, `application/*`, `*/*`).
    pub json: bool,
    /// `g=`: the API group of the rendering asked for.
    pub group: &'a str,
    /// `v=`: its version.
    pub version: &'a str,
    /// `as=`: its kind; empty for the resource itself.
    pub as_kind: &'a str,
}

/// The ranges of `accept`, in the client's order of preference.
pub fn ranges(accept: &str) -> impl Iterator<Item = Range<'_>> {
    accept.split(',').map(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        let mut parsed = Range {
            json: matches!(media, "application/json" | "application/*" | "*/*"),
            group: "",
            version: "",
            as_kind: "",
        };
        for param in parts {
            match param.split_once('=') {
                Some(("g", value)) => parsed.group = value,
                Some(("v", value)) => parsed.version = value,
                Some(("as", value)) => parsed.as_kind = value,
                _ => {}
            }
        }
        parsed
    })
}
