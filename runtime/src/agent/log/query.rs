//! What a log request asks for (the kubelet's `containerLogs` parameters) and how a run's CRI
//! records become the text `kubectl logs` shows: the `<time> <stream> <P|F> ` prefix stripped,
//! fragments joined back into lines (per stream), the time kept in front with `timestamps=true`.
//! Filters apply in the kubelet's order: `sinceSeconds`/`sinceTime`, then `tailLines`, then
//! `limitBytes` (which also ends a followed stream).

use jiff::{SignedDuration, Timestamp};

use crate::host::log::{Stream, Tag};

/// A parameter the request got wrong (answered 400, as kube-apiserver validates them).
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum QueryError {
    #[error("invalid {name} {value:?}: {expected}")]
    Invalid { name: &'static str, value: String, expected: &'static str },
    #[error("at most one of sinceTime or sinceSeconds may be specified")]
    BothSince,
}

/// Where a log starts from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Since {
    /// `sinceSeconds`: this long before the request.
    Seconds(u64),
    /// `sinceTime`.
    Time(Timestamp),
}

/// The query parameters of a log request.
#[derive(Debug, Default, PartialEq)]
pub struct LogQuery {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<usize>,
    pub limit_bytes: Option<usize>,
    pub since: Option<Since>,
}

/// Reads the parameters of a log request (percent-encoded, as kube-rs and kubectl send them);
/// unknown ones are ignored.
pub fn parse(query: Option<&str>) -> Result<LogQuery, QueryError> {
    let mut q = LogQuery::default();
    let mut since_seconds = None;
    let mut since_time = None;
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let invalid = |name, expected| QueryError::Invalid { name, value: value.to_string(), expected };
        match key.as_ref() {
            "follow" => q.follow = flag(&value),
            "previous" => q.previous = flag(&value),
            "timestamps" => q.timestamps = flag(&value),
            "tailLines" => {
                q.tail_lines = Some(value.parse().map_err(|_| invalid("tailLines", "a number of lines, 0 or more"))?);
            }
            "limitBytes" => {
                let bytes = value.parse().ok().filter(|b| *b > 0);
                q.limit_bytes = Some(bytes.ok_or_else(|| invalid("limitBytes", "a number of bytes, 1 or more"))?);
            }
            "sinceSeconds" => {
                let seconds = value.parse().ok().filter(|s| *s > 0);
                since_seconds = Some(seconds.ok_or_else(|| invalid("sinceSeconds", "a number of seconds, 1 or more"))?);
            }
            "sinceTime" => {
                since_time = Some(value.parse().map_err(|_| invalid("sinceTime", "an RFC 3339 time"))?);
            }
            _ => {}
        }
    }
    q.since = match (since_seconds, since_time) {
        (Some(_), Some(_)) => return Err(QueryError::BothSince),
        (Some(seconds), None) => Some(Since::Seconds(seconds)),
        (None, Some(time)) => Some(Since::Time(time)),
        (None, None) => None,
    };
    Ok(q)
}

fn flag(value: &str) -> bool {
    matches!(value, "true" | "1")
}

/// A line of output: its text (newline included, unless the run ended in the middle of it) and
/// the time of its first record (empty for text that is not a CRI record).
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub stamp: String,
    pub text: Vec<u8>,
    /// Written to stderr (stdout, or not a CRI record, otherwise).
    pub stderr: bool,
}

/// Turns a run's bytes into lines as they are read.
#[derive(Debug, Default)]
pub struct Decoder {
    /// A record not complete yet (read while it was being written).
    carry: Vec<u8>,
    /// The fragments of an unfinished line, per stream.
    open: [Option<Line>; 2],
}

impl Decoder {
    /// The lines that `bytes` complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Line> {
        let mut lines = Vec::new();
        let joined;
        let mut rest = bytes;
        if !self.carry.is_empty() {
            self.carry.extend_from_slice(bytes);
            joined = std::mem::take(&mut self.carry);
            rest = &joined;
        }
        while let Some(newline) = rest.iter().position(|b| *b == b'\n') {
            self.record(&rest[..newline], &mut lines);
            rest = &rest[newline + 1..];
        }
        self.carry = rest.to_vec();
        lines
    }

    /// At the end of a run (or of what a request reads): what is left, unfinished lines as they
    /// are.
    pub fn finish(&mut self) -> Vec<Line> {
        let mut lines = Vec::new();
        let carry = std::mem::take(&mut self.carry);
        if !carry.is_empty() {
            self.record(&carry, &mut lines);
        }
        lines.extend(self.open.iter_mut().filter_map(Option::take));
        lines
    }

    fn record(&mut self, raw: &[u8], lines: &mut Vec<Line>) {
        let Some((stamp, stream, tag, text)) = parse_record(raw) else {
            // Not a CRI record (written by something else): shown as it is.
            lines.push(Line { stamp: String::new(), text: [raw, b"\n"].concat(), stderr: false });
            return;
        };
        let slot = &mut self.open[stream as usize];
        let stderr = matches!(stream, Stream::Stderr);
        let mut line = slot.take().unwrap_or_else(|| Line { stamp: stamp.to_string(), text: Vec::new(), stderr });
        line.text.extend_from_slice(text);
        match tag {
            Tag::Full => {
                line.text.push(b'\n');
                lines.push(line);
            }
            Tag::Partial => *slot = Some(line),
        }
    }
}

/// `<time> <stream> <tag> <text>`, the record's newline removed.
fn parse_record(raw: &[u8]) -> Option<(&str, Stream, Tag, &[u8])> {
    let mut parts = raw.splitn(4, |b| *b == b' ');
    let stamp =
        std::str::from_utf8(parts.next()?).ok().filter(|s| s.len() >= 20 && s.as_bytes()[0].is_ascii_digit())?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    // Tags may be a list (`F:x`); the first says whether the record ends its line.
    let tag = match parts.next()?.first()? {
        b'F' => Tag::Full,
        b'P' => Tag::Partial,
        _ => return None,
    };
    Some((stamp, stream, tag, parts.next().unwrap_or_default()))
}

/// Applies a request's filters to lines as they are read and renders them.
#[derive(Debug)]
pub struct Output {
    since: Option<Timestamp>,
    timestamps: bool,
    /// Bytes still to send, under `limitBytes`.
    remaining: Option<usize>,
}

impl Output {
    /// `now` is when the request came, which `sinceSeconds` counts back from.
    pub fn new(query: &LogQuery, now: Timestamp) -> Self {
        let since = query.since.map(|since| match since {
            Since::Seconds(s) => {
                let back = SignedDuration::from_secs(i64::try_from(s).unwrap_or(i64::MAX));
                now.checked_sub(back).unwrap_or(Timestamp::MIN)
            }
            Since::Time(t) => t,
        });
        Self { since, timestamps: query.timestamps, remaining: query.limit_bytes }
    }

    /// The first answer: the lines since the start asked for, the last `tail` of those.
    pub fn first(&mut self, lines: Vec<Line>, tail: Option<usize>) -> Vec<u8> {
        let mut lines: Vec<Line> = lines.into_iter().filter(|l| self.keeps(l)).collect();
        if let Some(n) = tail {
            lines.drain(..lines.len().saturating_sub(n));
        }
        self.render(lines)
    }

    /// Lines that came later, for a followed log.
    pub fn more(&mut self, lines: Vec<Line>) -> Vec<u8> {
        let lines: Vec<Line> = lines.into_iter().filter(|l| self.keeps(l)).collect();
        self.render(lines)
    }

    /// `limitBytes` were sent: the answer is complete.
    pub fn exhausted(&self) -> bool {
        self.remaining == Some(0)
    }

    fn keeps(&self, line: &Line) -> bool {
        // A line without a readable time is kept: there is nothing to say it is too old.
        self.since.is_none_or(|since| line.stamp.parse::<Timestamp>().map_or(true, |t| t >= since))
    }

    fn render(&mut self, lines: Vec<Line>) -> Vec<u8> {
        let mut out = Vec::new();
        for line in lines {
            if self.timestamps && !line.stamp.is_empty() {
                out.extend_from_slice(line.stamp.as_bytes());
                out.push(b' ');
            }
            out.extend_from_slice(&line.text);
        }
        if let Some(remaining) = &mut self.remaining {
            out.truncate(*remaining);
            *remaining -= out.len();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: &str = "2026-11-22T01:02:01.000000000Z";
    const T2: &str = "2026-11-22T01:02:02.500000000Z";
    const T3: &str = "2026-11-22T01:02:03.123456789Z";

    fn decode(raw: &str) -> Vec<Line> {
        let mut decoder = Decoder::default();
        let mut lines = decoder.push(raw.as_bytes());
        lines.extend(decoder.finish());
        lines
    }

    fn line(stamp: &str, text: &str) -> Line {
        Line { stamp: stamp.to_string(), text: text.as_bytes().to_vec(), stderr: false }
    }

    fn err_line(stamp: &str, text: &str) -> Line {
        Line { stderr: true, ..line(stamp, text) }
    }

    #[test]
    fn records_decode_into_lines_with_fragments_joined_per_stream() {
        let cases = [
            ("whole lines", format!("{T1} stdout F a\n{T2} stderr F b\n"), vec![line(T1, "a\n"), err_line(T2, "b\n")]),
            ("an empty line", format!("{T1} stdout F \n"), vec![line(T1, "\n")]),
            ("an empty line without its space", format!("{T1} stdout F\n"), vec![line(T1, "\n")]),
            ("spaces in the text", format!("{T1} stdout F a  b \n"), vec![line(T1, "a  b \n")]),
            ("fragments", format!("{T1} stdout P ab\n{T2} stdout F cd\n"), vec![line(T1, "abcd\n")]),
            (
                "fragments interleaved with the other stream",
                format!("{T1} stdout P ab\n{T2} stderr F err\n{T3} stdout F cd\n"),
                vec![err_line(T2, "err\n"), line(T1, "abcd\n")],
            ),
            (
                "a last line never ended",
                format!("{T1} stdout F a\n{T2} stdout P b\n"),
                vec![line(T1, "a\n"), line(T2, "b")],
            ),
            ("text that is no record", "plain text\n".to_string(), vec![line("", "plain text\n")]),
            (
                "a record cut short by the read",
                format!("{T1} stdout F a\n{T2} stdout F b"),
                vec![line(T1, "a\n"), line(T2, "b\n")],
            ),
        ];
        for (name, raw, want) in cases {
            assert_eq!(decode(&raw), want, "{name}");
        }
    }

    #[test]
    fn records_split_across_reads_are_joined() {
        let raw = format!("{T1} stdout F hello\n{T2} stderr F world\n");
        let mut decoder = Decoder::default();
        let (a, b) = raw.as_bytes().split_at(50); // inside the second record
        assert_eq!(decoder.push(a), vec![line(T1, "hello\n")]);
        assert_eq!(decoder.push(b), vec![err_line(T2, "world\n")]);
        assert_eq!(decoder.finish(), vec![]);
    }

    #[test]
    fn queries_parse_like_kubelet_parameters() {
        let q = parse(Some("follow=true&tailLines=3&previous=false&limitBytes=10&container=x&timestamps=true"))
            .expect("valid");
        let want = LogQuery {
            follow: true,
            previous: false,
            timestamps: true,
            tail_lines: Some(3),
            limit_bytes: Some(10),
            since: None,
        };
        assert_eq!(q, want);
        let since = parse(Some("&sinceTime=2023-10-19T13%3A14%3A26Z")).expect("valid").since;
        assert_eq!(since, Some(Since::Time("2023-10-19T13:14:26Z".parse().expect("time"))));
        assert_eq!(parse(Some("sinceSeconds=30")).expect("valid").since, Some(Since::Seconds(30)));
        assert_eq!(parse(None).expect("valid"), LogQuery::default());
        for bad in ["tailLines=-1", "limitBytes=0", "sinceSeconds=0", "sinceSeconds=x", "sinceTime=yesterday"] {
            assert!(matches!(parse(Some(bad)), Err(QueryError::Invalid { .. })), "{bad}");
        }
        assert_eq!(parse(Some("sinceSeconds=1&sinceTime=2023-10-19T13:14:26Z")), Err(QueryError::BothSince));
    }

    fn output(query: &str, tail_too: bool) -> String {
        let q = parse(Some(query)).expect("valid");
        let now: Timestamp = "2026-11-22T01:02:04Z".parse().expect("now");
        let lines = vec![line(T1, "one\n"), line(T2, "two\n"), line(T3, "three\n")];
        let mut out = Output::new(&q, now);
        let tail = if tail_too { q.tail_lines } else { None };
        String::from_utf8(out.first(lines, tail)).expect("utf-8")
    }

    #[test]
    fn since_then_tail_then_limit_apply_and_timestamps_stay_on_request() {
        let cases = [
            ("", "one\ntwo\nthree\n"),
            ("timestamps=true", &format!("{T1} one\n{T2} two\n{T3} three\n")),
            ("sinceSeconds=2", "two\nthree\n"),
            ("sinceTime=2026-11-22T01:02:02Z", "two\nthree\n"),
            ("sinceTime=2026-11-22T01:02:03.123456789Z", "three\n"),
            ("sinceTime=2026-11-23T00:00:00Z", ""),
            ("tailLines=2", "two\nthree\n"),
            ("tailLines=0", ""),
            ("tailLines=9", "one\ntwo\nthree\n"),
            ("sinceSeconds=3&tailLines=1", "three\n"),
            ("sinceSeconds=2&tailLines=5", "two\nthree\n"),
            ("limitBytes=6", "one\ntw"),
            ("tailLines=2&limitBytes=5", "two\nt"),
            ("timestamps=true&limitBytes=32", &format!("{T1} o")),
        ];
        for (query, want) in cases {
            assert_eq!(output(query, true), want, "{query}");
        }
    }

    #[test]
    fn a_followed_log_stops_at_its_byte_limit() {
        let q = parse(Some("limitBytes=6")).expect("valid");
        let mut out = Output::new(&q, Timestamp::now());
        assert_eq!(out.first(vec![line(T1, "abcd\n")], None), b"abcd\n");
        assert!(!out.exhausted());
        assert_eq!(out.more(vec![line(T2, "efgh\n")]), b"e");
        assert!(out.exhausted());
        assert_eq!(out.more(vec![line(T3, "ijkl\n")]), b"");
    }
}
