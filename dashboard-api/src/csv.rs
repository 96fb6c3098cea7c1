//! CSV exports of the dashboard answers: UTF-8 with a byte-order mark (Excel reads Chinese
//! names correctly only with it), CRLF line ends, a header row, RFC 4180 quoting.
//!
//! A table is a list of columns, each a dot path into the JSON value of a row (`by_status.closed`,
//! `previous.score`), so an export holds exactly the numbers the JSON answer holds.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

const BOM: &str = "\u{feff}";

/// The cell of `path` in `row`: numbers as JSON writes them, strings as they are, null and
/// missing as empty.
fn cell(row: &Value, path: &str) -> Cell {
    let mut v = row;
    for part in path.split('.') {
        v = &v[part];
    }
    match v {
        Value::Null => Cell::Number(String::new()),
        Value::Bool(b) => Cell::Number(b.to_string()),
        Value::Number(n) => Cell::Number(n.to_string()),
        Value::String(s) => Cell::Text(s.clone()),
        other => Cell::Text(other.to_string()),
    }
}

enum Cell {
    Number(String),
    Text(String),
}

/// One field, quoted when it holds a separator, a quote or a line break. Text that a
/// spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, CR first) gets a `'` in front.
fn field(c: Cell) -> String {
    let text = match c {
        Cell::Number(n) => n,
        Cell::Text(t) if t.starts_with(['=', '+', '-', '@', '\t', '\r']) => format!("'{t}"),
        Cell::Text(t) => t,
    };
    if text.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// The CSV text of `rows` under `columns` (the header names the columns by their paths).
pub fn table(columns: &[String], rows: &[Value]) -> String {
    let mut out = String::from(BOM);
    let line = |cells: Vec<String>, out: &mut String| {
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    };
    line(
        columns
            .iter()
            .map(|c| field(Cell::Text(c.clone())))
            .collect(),
        &mut out,
    );
    for row in rows {
        line(
            columns.iter().map(|c| field(cell(row, c))).collect(),
            &mut out,
        );
    }
    out
}

/// A CSV download named `filename` (ASCII: codes, dates and route names only).
pub fn response(filename: &str, body: String) -> Response {
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment; filename=\"gridclue.csv\""));
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response()
}

/// A dashboard answer also offered as a CSV download: its `rows` (then its `total`, when
/// [`Export::WITH_TOTAL`]) under its columns.
pub trait Export: serde::Serialize {
    /// Whether the `total` row follows the rows.
    const WITH_TOTAL: bool = false;

    /// The download's name (ASCII: codes, dates and route names only).
    fn file_name(&self) -> String;

    /// The columns: dot paths into each row's JSON value.
    fn columns(&self) -> Vec<String>;
}

/// Column names from string slices.
pub fn columns(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bom_header_quoting_and_nulls() {
        let rows = vec![
            json!({"name": "洪泉街道", "n": 3, "rate": 0.5, "s": {"closed": 2}}),
            json!({"name": "say \"hi\", then\nleave", "n": -1, "rate": null, "s": {}}),
        ];
        let text = table(&columns(&["name", "n", "rate", "s.closed"]), &rows);
        assert_eq!(
            text,
            "\u{feff}name,n,rate,s.closed\r\n洪泉街道,3,0.5,2\r\n\"say \"\"hi\"\", then\nleave\",-1,,\r\n"
        );
    }

    #[test]
    fn formulas_in_text_are_defused_but_negative_numbers_are_not() {
        let rows = vec![json!({"t": "=HYPERLINK(\"x\")", "n": -0.25, "m": "-3"})];
        let text = table(&columns(&["t", "n", "m"]), &rows);
        assert_eq!(
            text,
            "\u{feff}t,n,m\r\n\"'=HYPERLINK(\"\"x\"\")\",-0.25,'-3\r\n"
        );
    }
}
