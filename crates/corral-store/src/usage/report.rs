//! A usage report's parameters read from `name=value` pairs (the HTTP query and the CLI share
//! them), and its rows as JSON, CSV or an aligned text table.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{json, Map, Value};

use super::{UsageDimension, UsageQuery, UsageRow};

/// A parameter that cannot be read: its name and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct UsageParamError {
    /// The parameter's name (`from`, `group_by`, …).
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

fn bad(field: &str, problem: impl Into<String>) -> UsageParamError {
    UsageParamError {
        field: field.to_owned(),
        problem: problem.into(),
    }
}

/// The parameter names a report takes, besides `format`.
const PARAMS: [&str; 8] = ["from", "to", "group_by", "user", "key", "model", "instance", "group"];

impl UsageQuery {
    /// Reads a report's parameters: `from` and `to` (a date `2026-12-05`, an RFC 3339 time, or
    /// Unix seconds; a bare `to` date includes that whole day; default: every record), `group_by`
    /// (comma-separated and/or repeated: user, key, group, model, instance, day) and the filters
    /// `user`, `key`, `model`, `instance` (an index) and `group` (an id). `format` is left to the
    /// caller; any other name is refused.
    pub fn from_params<'a>(
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<UsageQuery, UsageParamError> {
        let mut query = UsageQuery {
            from_ms: 0,
            to_ms: i64::MAX,
            ..UsageQuery::default()
        };
        for (name, value) in params {
            let value = value.trim();
            let text = || (!value.is_empty()).then(|| value.to_owned());
            match name {
                "from" => query.from_ms = time_ms(name, value, false)?,
                "to" => query.to_ms = time_ms(name, value, true)?,
                "group_by" => {
                    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                        let dim = UsageDimension::parse(part).ok_or_else(|| {
                            bad(
                                name,
                                format!("{part:?} is not one of user, key, group, model, instance, day"),
                            )
                        })?;
                        if !query.group_by.contains(&dim) {
                            query.group_by.push(dim);
                        }
                    }
                }
                "user" => query.user = text(),
                "key" => query.key = text(),
                "model" => query.model = text(),
                "group" => query.group = text(),
                "instance" => {
                    query.instance = Some(
                        value
                            .parse::<u16>()
                            .map(i32::from)
                            .map_err(|_| bad(name, format!("{value:?} is not an instance index (0, 1, …)")))?,
                    )
                }
                "format" => {}
                other => {
                    return Err(bad(
                        other,
                        format!("unknown parameter; expected one of {}, format", PARAMS.join(", ")),
                    ))
                }
            }
        }
        if query.from_ms >= query.to_ms {
            return Err(bad("to", "must be later than `from`"));
        }
        Ok(query)
    }
}

/// Unix milliseconds of a `from` or `to` value.
fn time_ms(field: &str, value: &str, end: bool) -> Result<i64, UsageParamError> {
    if let Ok(secs) = value.parse::<i64>() {
        return secs
            .checked_mul(1000)
            .filter(|ms| *ms >= 0)
            .ok_or_else(|| bad(field, format!("{value} is not a Unix time in seconds")));
    }
    if let Ok(date) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        let date = if end { date.succ_opt().unwrap_or(date) } else { date };
        return date
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp_millis())
            .ok_or_else(|| bad(field, format!("{value} is not a date")));
    }
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc).timestamp_millis())
        .map_err(|_| {
            bad(
                field,
                format!(
                    "{value:?} is not a date (2026-12-05), an RFC 3339 time (2026-12-05T10:00:00Z) or Unix seconds"
                ),
            )
        })
}

/// The metric columns every report row has, in order.
const METRICS: [&str; 11] = [
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cancelled",
    "failed",
    "estimated",
    "streamed",
    "avg_ttft_ms",
    "avg_duration_ms",
    "duration_ms",
];

impl UsageRow {
    /// The row's values for the dimensions grouped by, then every metric, as JSON values.
    pub fn cells(&self, dims: &[UsageDimension]) -> Vec<(&'static str, Value)> {
        let mut cells: Vec<(&'static str, Value)> = dims
            .iter()
            .map(|d| {
                let v = match d {
                    UsageDimension::User => json!(self.user_id),
                    UsageDimension::Key => json!(self.key_id),
                    UsageDimension::Group => json!(self.group_id),
                    UsageDimension::Model => json!(self.model),
                    UsageDimension::Instance => json!(self.instance),
                    UsageDimension::Day => json!(self.day.and_then(day_name)),
                };
                (d.as_str(), v)
            })
            .collect();
        let avg = |sum: i64, n: i64| {
            if n > 0 {
                json!((sum as f64 / n as f64 * 10.0).round() / 10.0)
            } else {
                Value::Null
            }
        };
        let values = [
            json!(self.requests),
            json!(self.input_tokens),
            json!(self.output_tokens),
            json!(self.input_tokens + self.output_tokens),
            json!(self.cancelled),
            json!(self.failed),
            json!(self.estimated),
            json!(self.streamed),
            avg(self.ttft_ms_sum, self.ttft_count),
            avg(self.duration_ms_sum, self.requests),
            json!(self.duration_ms_sum),
        ];
        cells.extend(METRICS.into_iter().zip(values));
        cells
    }

    /// The row as a JSON object (see [`UsageRow::cells`]).
    pub fn to_json(&self, dims: &[UsageDimension]) -> Value {
        Value::Object(
            self.cells(dims)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect::<Map<String, Value>>(),
        )
    }
}

/// A Unix day as `YYYY-MM-DD`.
fn day_name(day: i64) -> Option<String> {
    DateTime::from_timestamp(day.checked_mul(86_400)?, 0).map(|t| t.format("%Y-%m-%d").to_string())
}

/// The column names of a report grouped by `dims`.
pub fn usage_columns(dims: &[UsageDimension]) -> Vec<&'static str> {
    dims.iter().map(|d| d.as_str()).chain(METRICS).collect()
}

fn plain(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The report as CSV (RFC 4180: a header line, CRLF line ends, fields quoted when needed).
pub fn usage_csv(dims: &[UsageDimension], rows: &[UsageRow]) -> String {
    let field = |s: String| {
        if s.contains([',', '"', '\r', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s
        }
    };
    let mut out = usage_columns(dims).join(",");
    out.push_str("\r\n");
    for row in rows {
        let line: Vec<String> = row.cells(dims).iter().map(|(_, v)| field(plain(v))).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

/// The report as a text table with aligned columns, for the terminal.
pub fn usage_table(dims: &[UsageDimension], rows: &[UsageRow]) -> String {
    let header: Vec<String> = usage_columns(dims).into_iter().map(str::to_owned).collect();
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r.cells(dims)
                .iter()
                .map(|(_, v)| match v {
                    Value::Null => "-".to_owned(),
                    v => plain(v),
                })
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(String::len).collect();
    for line in &body {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in std::iter::once(&header).chain(&body) {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                if i < dims.len() {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &[(&'static str, &'static str)]) -> Result<UsageQuery, UsageParamError> {
        UsageQuery::from_params(q.iter().copied())
    }

    #[test]
    fn parameters_are_read_and_bad_ones_named() {
        let q = parse(&[
            ("from", "2026-12-01"),
            ("to", "2026-12-01"),
            ("group_by", "user,day"),
            ("group_by", "model"),
        ])
        .unwrap();
        assert_eq!(q.from_ms, 1_796_083_200_000);
        assert_eq!(q.to_ms, 1_796_083_200_000 + 86_400_000);
        assert_eq!(
            q.group_by,
            [UsageDimension::User, UsageDimension::Day, UsageDimension::Model]
        );
        let q = parse(&[
            ("from", "2026-12-01T10:00:00+01:00"),
            ("to", "1796083200"),
            ("instance", "2"),
        ]);
        assert_eq!(q.unwrap_err().field, "to", "from after to");
        assert_eq!(parse(&[("instance", "2")]).unwrap().instance, Some(2));
        for (bad, field) in [
            (("from", "yesterday"), "from"),
            (("to", "2026-13-01"), "to"),
            (("group_by", "user,colour"), "group_by"),
            (("instance", "-1"), "instance"),
            (("colour", "red"), "colour"),
        ] {
            let err = parse(&[bad]).unwrap_err();
            assert_eq!(err.field, field, "{err}");
        }
    }

    #[test]
    fn rows_render_as_csv_and_a_table() {
        let row = UsageRow {
            user_id: Some("a,\"b\"".into()),
            key_id: None,
            group_id: None,
            model: None,
            instance: None,
            day: Some(20_788),
            requests: 2,
            input_tokens: 10,
            output_tokens: 5,
            cancelled: 0,
            failed: 1,
            estimated: 0,
            streamed: 1,
            ttft_ms_sum: 7,
            ttft_count: 2,
            duration_ms_sum: 30,
        };
        let dims = [UsageDimension::User, UsageDimension::Day];
        assert_eq!(
            usage_csv(&dims, std::slice::from_ref(&row)),
            "user,day,requests,prompt_tokens,completion_tokens,total_tokens,cancelled,failed,estimated,streamed,avg_ttft_ms,avg_duration_ms,duration_ms\r\n\
             \"a,\"\"b\"\"\",2026-12-01,2,10,5,15,0,1,0,1,3.5,15.0,30\r\n"
        );
        assert_eq!(row.to_json(&dims)["day"], "2026-12-01");
        let table = usage_table(&dims, &[row]);
        assert_eq!(table.lines().count(), 2);
        assert!(table.starts_with("user   day         requests"), "{table}");
    }
}
