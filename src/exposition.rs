//! The text exposition formats: Prometheus text 0.0.4 ("classic") and OpenMetrics 1.0,
//! label-value escaping, and content negotiation.

use std::fmt::Write as _;

/// `Content-Type` of the classic Prometheus text format.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// `Content-Type` of OpenMetrics text.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A text exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Classic,
    OpenMetrics,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Classic => CLASSIC_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// The metric type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Gauge,
}

/// A family's name, help text and unit (the unit is the name's suffix, for OpenMetrics' `# UNIT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyDesc {
    pub name: &'static str,
    pub help: &'static str,
    pub unit: Option<&'static str>,
    pub kind: MetricType,
}

impl FamilyDesc {
    /// Writes the `# HELP` / `# TYPE` (and for OpenMetrics `# UNIT`) lines.
    pub fn write_header(&self, out: &mut String, format: Format) {
        let kind = match self.kind {
            MetricType::Gauge => "gauge",
        };
        match format {
            Format::Classic => {
                let _ = writeln!(
                    out,
                    "# HELP {} {}",
                    self.name,
                    escape_help(self.help, format)
                );
                let _ = writeln!(out, "# TYPE {} {kind}", self.name);
            }
            Format::OpenMetrics => {
                let _ = writeln!(out, "# TYPE {} {kind}", self.name);
                if let Some(unit) = self.unit {
                    let _ = writeln!(out, "# UNIT {} {unit}", self.name);
                }
                let _ = writeln!(
                    out,
                    "# HELP {} {}",
                    self.name,
                    escape_help(self.help, format)
                );
            }
        }
    }
}

fn escape_help(help: &str, format: Format) -> String {
    let mut out = String::with_capacity(help.len());
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if format == Format::OpenMetrics => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

/// Appends a label value escaped as both formats require: `\`, `"` and line feed.
pub fn push_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Appends a sample value: the shortest text that parses back to the same `f64`.
pub fn push_value(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else if value == value.trunc() && value.abs() < 1e15 {
        // Whole numbers (flags, timestamps, counts) without a fraction.
        let _ = write!(out, "{}", value as i64);
    } else {
        let _ = write!(out, "{value:?}");
    }
}

/// Appends one sample line; identical in both formats for gauges without timestamps.
pub fn push_sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (label, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(label);
            out.push_str("=\"");
            push_label_value(out, v);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    push_value(out, value);
    out.push('\n');
}

/// Picks the format from an `Accept` header: OpenMetrics when it is acceptable and preferred at
/// least as much as plain text, else the classic format.
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Classic;
    };
    let mut openmetrics_q: f32 = 0.0;
    let mut text_q: f32 = 0.0;
    for (media, q) in weighted(accept) {
        match media.as_str() {
            "application/openmetrics-text" => openmetrics_q = openmetrics_q.max(q),
            "text/plain" | "text/*" | "*/*" => text_q = text_q.max(q),
            _ => {}
        }
    }
    if openmetrics_q > 0.0 && openmetrics_q >= text_q {
        Format::OpenMetrics
    } else {
        Format::Classic
    }
}

/// The items of an `Accept` or `Accept-Encoding` header, lower-cased, with their `q` weight.
fn weighted(header: &str) -> impl Iterator<Item = (String, f32)> + '_ {
    header.split(',').map(|item| {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|param| param.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .map_or(1.0, |(_, v)| v.trim().parse().unwrap_or(0.0));
        (name, q)
    })
}

/// Whether an `Accept-Encoding` header allows gzip.
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    let Some(header) = accept_encoding else {
        return false;
    };
    let mut gzip: Option<f32> = None;
    let mut any: Option<f32> = None;
    for (name, q) in weighted(header) {
        match name.as_str() {
            "gzip" | "x-gzip" => gzip = Some(q),
            "*" => any = Some(q),
            _ => {}
        }
    }
    gzip.or(any).is_some_and(|q| q > 0.0)
}

/// Rewrites prometheus-client's OpenMetrics output (counters and gauges, no exemplars) into
/// the classic text format: counter families take their `_total` sample name, `# UNIT` and
/// `# EOF` go, and HELP text loses OpenMetrics' quote escaping.
pub fn openmetrics_to_classic(openmetrics: &str) -> String {
    let mut counters: Vec<&str> = Vec::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, "counter")) = rest.rsplit_once(' ')
        {
            counters.push(name);
        }
    }
    let classic_name = |name: &str| -> String {
        if counters.contains(&name) {
            format!("{name}_total")
        } else {
            name.to_string()
        }
    };
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let _ = writeln!(
                out,
                "# HELP {} {}",
                classic_name(name),
                help.replace("\\\"", "\"")
            );
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.rsplit_once(' ').unwrap_or((rest, "untyped"));
            let kind = match kind {
                "counter" | "gauge" | "histogram" | "summary" => kind,
                _ => "untyped",
            };
            let _ = writeln!(out, "# TYPE {} {kind}", classic_name(name));
        } else if line.starts_with('#') || is_created_sample(line, &counters) {
            continue;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn is_created_sample(line: &str, counters: &[&str]) -> bool {
    counters.iter().any(|name| {
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix("_created"))
            .is_some_and(|rest| rest.starts_with(['{', ' ']))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        push_sample(
            &mut out,
            "m",
            &[
                ("a", "back\\slash \"quoted\"\nnewline"),
                ("b", "ünïcödé, {braces}="),
            ],
            1.5,
        );
        assert_eq!(
            out,
            "m{a=\"back\\\\slash \\\"quoted\\\"\\nnewline\",b=\"ünïcödé, {braces}=\"} 1.5\n"
        );
    }

    #[test]
    fn values_round_trip() {
        let cases = [
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (1_764_547_200.0, "1764547200"),
            (12.345_678_901_2, "12.3456789012"),
            (-2.61e-8, "-2.61e-8"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e300, "1e300"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ];
        for (value, text) in cases {
            let mut out = String::new();
            push_value(&mut out, value);
            assert_eq!(out, text, "{value}");
            if value.is_finite() {
                assert_eq!(out.parse::<f64>().unwrap(), value);
            }
        }
        let mut nan = String::new();
        push_value(&mut nan, f64::NAN);
        assert_eq!(nan, "NaN");
    }

    #[test]
    fn negotiation_follows_accept() {
        assert_eq!(negotiate(None), Format::Classic);
        assert_eq!(negotiate(Some("*/*")), Format::Classic);
        assert_eq!(negotiate(Some("text/plain")), Format::Classic);
        assert_eq!(
            negotiate(Some("application/openmetrics-text")),
            Format::OpenMetrics
        );
        // Prometheus 2.x default.
        assert_eq!(
            negotiate(Some(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            )),
            Format::OpenMetrics
        );
        // Prometheus configured to prefer the classic format.
        assert_eq!(
            negotiate(Some(
                "text/plain;version=0.0.4;q=0.9,application/openmetrics-text;version=1.0.0;q=0.5"
            )),
            Format::Classic
        );
        assert_eq!(
            negotiate(Some("application/openmetrics-text;q=0")),
            Format::Classic
        );
    }

    #[test]
    fn gzip_follows_accept_encoding() {
        assert!(!accepts_gzip(None));
        assert!(accepts_gzip(Some("gzip")));
        assert!(accepts_gzip(Some("deflate, gzip;q=0.5")));
        assert!(accepts_gzip(Some("*")));
        assert!(!accepts_gzip(Some("gzip;q=0")));
        assert!(!accepts_gzip(Some("identity")));
        assert!(!accepts_gzip(Some("*, gzip;q=0")));
    }

    #[test]
    fn headers_differ_by_format() {
        let desc = FamilyDesc {
            name: "aws_cost_daily_usd",
            help: "Cost of the day",
            unit: Some("usd"),
            kind: MetricType::Gauge,
        };
        let mut classic = String::new();
        desc.write_header(&mut classic, Format::Classic);
        assert_eq!(
            classic,
            "# HELP aws_cost_daily_usd Cost of the day\n# TYPE aws_cost_daily_usd gauge\n"
        );
        let mut om = String::new();
        desc.write_header(&mut om, Format::OpenMetrics);
        assert_eq!(
            om,
            "# TYPE aws_cost_daily_usd gauge\n# UNIT aws_cost_daily_usd usd\n# HELP aws_cost_daily_usd Cost of the day\n"
        );
    }

    #[test]
    fn openmetrics_counters_become_classic_totals() {
        let om = "# HELP req Requests \\\"made\\\".\n# TYPE req counter\nreq_total{a=\"b\"} 3\nreq_created{a=\"b\"} 1.7e9\n# HELP g A gauge.\n# TYPE g gauge\n# UNIT g seconds\ng 1.5\n# EOF\n";
        assert_eq!(
            openmetrics_to_classic(om),
            "# HELP req_total Requests \"made\".\n# TYPE req_total counter\nreq_total{a=\"b\"} 3\n# HELP g A gauge.\n# TYPE g gauge\ng 1.5\n"
        );
    }
}
