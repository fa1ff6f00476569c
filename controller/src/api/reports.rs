//! `/reports/plays`: proof of play per bulletin and area over a date range — planned vs played vs missed, with the
//! reasons, and one row per play — as JSON for the console, or as the CSV (RFC 4180, UTF-8 with a byte-order mark
//! so Excel shows Vietnamese) and XLSX files officials file. Dates are local (the controller's time zone,
//! Asia/Ho_Chi_Minh by default); column headings and statuses are Vietnamese unless `lang=en`.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Duration, NaiveDate, NaiveTime};
use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::CurrentUser;
use super::{rfc3339, rfc3339_opt, ApiError, AppState, Params};
use crate::store::reports::{PlayReport, ReportQuery};

/// Longest range of one report, days.
pub const MAX_REPORT_DAYS: i64 = 366;
/// Most play rows in a JSON report (the summary always counts every play).
pub const MAX_JSON_ROWS: usize = 10_000;
/// Most play rows in a CSV or XLSX file; past it the request is refused with a request to narrow it.
pub const MAX_FILE_ROWS: usize = 500_000;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/reports/plays", get(plays))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportParams {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    area: Option<i64>,
    #[serde(default)]
    bulletin: Option<String>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    table: Option<String>,
    #[serde(default)]
    lang: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
    Xlsx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    Vi,
    En,
}

/// Parses a `YYYY-MM-DD` query date.
fn parse_date(name: &str, s: &str) -> Result<NaiveDate, ApiError> {
    let ok = s.len() == 10 && s.as_bytes()[4] == b'-' && s.as_bytes()[7] == b'-';
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().filter(|_| ok).ok_or_else(|| {
        ApiError::bad_request(format!("{name} \"{s}\" is not a date; write it as YYYY-MM-DD, e.g. 2026-11-23"))
    })
}

/// Local midnight starting `d`, UTC ms.
fn day_start(d: NaiveDate, tz: Tz) -> i64 {
    crate::schedule::rule::local_to_utc(d.and_time(NaiveTime::MIN), tz).map_or(0, |t| t.timestamp_millis())
}

/// `YYYY-MM-DD HH:MM` local.
fn local(ms: i64, tz: Tz) -> String {
    DateTime::from_timestamp_millis(ms).unwrap_or_default().with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string()
}

async fn plays(
    State(state): State<AppState>,
    user: CurrentUser,
    Params(p): Params<ReportParams>,
) -> Result<Response, ApiError> {
    let tz = state.settings.tz;
    let today = state.now().with_timezone(&tz).date_naive();
    let to = p.to.as_deref().map(|s| parse_date("to", s)).transpose()?.unwrap_or(today);
    let from = p.from.as_deref().map(|s| parse_date("from", s)).transpose()?.unwrap_or(to);
    if to < from {
        return Err(ApiError::bad_request(format!("to ({to}) is before from ({from})")));
    }
    let days = (to - from).num_days() + 1;
    if days > MAX_REPORT_DAYS {
        return Err(ApiError::bad_request(format!(
            "the range {from} to {to} is {days} days; one report covers at most {MAX_REPORT_DAYS}"
        )));
    }
    let format = match p.format.as_deref() {
        None | Some("json") => Format::Json,
        Some("csv") => Format::Csv,
        Some("xlsx") => Format::Xlsx,
        Some(other) => return Err(ApiError::bad_request(format!("format must be json, csv or xlsx, not \"{other}\""))),
    };
    let lang = match p.lang.as_deref() {
        None | Some("vi") => Lang::Vi,
        Some("en") => Lang::En,
        Some(other) => return Err(ApiError::bad_request(format!("lang must be vi or en, not \"{other}\""))),
    };
    let summary_only = match p.table.as_deref() {
        None | Some("plays") => false,
        Some("summary") => true,
        Some(other) => return Err(ApiError::bad_request(format!("table must be plays or summary, not \"{other}\""))),
    };
    let max_rows = if format == Format::Json { MAX_JSON_ROWS } else { MAX_FILE_ROWS };
    let query = ReportQuery {
        from_ms: day_start(from, tz),
        until_ms: day_start(to + Duration::days(1), tz),
        area: p.area,
        bulletin: p.bulletin.filter(|b| !b.is_empty()),
        max_rows,
    };
    let report = state.store.play_report(&query, user.scope)?;
    if format != Format::Json && report.truncated {
        return Err(ApiError::unprocessable(format!(
            "more than {MAX_FILE_ROWS} plays match; choose a shorter range, one area or one bulletin"
        )));
    }
    let stem = format!("loa-plays-{from}-to-{to}");
    match format {
        Format::Json => Ok(Json(json_report(&report, from, to, tz)).into_response()),
        Format::Csv => {
            let (table, name) = if summary_only {
                (summary_table(&report, lang), format!("{stem}-summary.csv"))
            } else {
                (plays_table(&report, lang, tz), format!("{stem}.csv"))
            };
            Ok(download(to_csv(&table), "text/csv; charset=utf-8", &name))
        }
        Format::Xlsx => {
            let sheets = [
                (if lang == Lang::Vi { "Tổng hợp" } else { "Summary" }, summary_table(&report, lang)),
                (if lang == Lang::Vi { "Chi tiết" } else { "Plays" }, plays_table(&report, lang, tz)),
            ];
            let bytes = to_xlsx(&sheets).map_err(ApiError::internal)?;
            Ok(download(bytes, XLSX_TYPE, &format!("{stem}.xlsx")))
        }
    }
}

/// The XLSX media type.
pub const XLSX_TYPE: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

fn download(bytes: Vec<u8>, content_type: &'static str, filename: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\"")),
        ],
        bytes,
    )
        .into_response()
}

fn json_report(r: &PlayReport, from: NaiveDate, to: NaiveDate, tz: Tz) -> Value {
    let summary: Vec<Value> = r
        .summary
        .iter()
        .map(|s| {
            let reasons: Vec<Value> =
                s.missed_reasons.iter().map(|(reason, count)| json!({"reason": reason, "count": count})).collect();
            json!({
                "bulletin_id": s.bulletin_id,
                "title": s.title,
                "area_id": s.area_id,
                "area_name": s.area_name,
                "planned": s.planned,
                "played": s.played,
                "missed": s.missed,
                "preempted": s.preempted,
                "cancelled": s.cancelled,
                "pending": s.pending,
                "missed_reasons": reasons,
            })
        })
        .collect();
    let plays: Vec<Value> = r
        .plays
        .iter()
        .map(|p| {
            json!({
                "play_id": p.play_id,
                "planned_at": rfc3339(p.planned_at),
                "planned_local": local(p.planned_at, tz),
                "bulletin_id": p.bulletin_id,
                "title": p.title,
                "area_id": p.area_id,
                "area_name": p.area_name,
                "receiver_id": p.receiver_id,
                "receiver_name": p.receiver_name,
                "tier": p.tier,
                "status": p.status,
                "started_at": rfc3339_opt(p.started_at),
                "finished_at": rfc3339_opt(p.finished_at),
                "reason": p.reason,
            })
        })
        .collect();
    json!({
        "from": from.to_string(),
        "to": to.to_string(),
        "time_zone": tz.name(),
        "summary": summary,
        "plays": plays,
        "truncated": r.truncated,
    })
}

/// One cell of a report table.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Text (escaped in CSV, a string in XLSX).
    Text(String),
    /// A count.
    Int(i64),
    /// A local date and time `YYYY-MM-DD HH:MM` (an Excel date in XLSX), or empty.
    Time(Option<String>),
}

/// A table: headings and rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Column headings.
    pub headings: Vec<&'static str>,
    /// Rows, each as long as the headings.
    pub rows: Vec<Vec<Cell>>,
}

fn status_label(status: &str, lang: Lang) -> String {
    if lang == Lang::En {
        return status.to_string();
    }
    match status {
        "planned" => "chờ phát",
        "downloading" => "đang tải",
        "ready" => "sẵn sàng",
        "playing" => "đang phát",
        "played" => "đã phát",
        "missed" => "bỏ lỡ",
        "preempted" => "bị ngắt",
        "cancelled" => "đã hủy",
        other => other,
    }
    .to_string()
}

fn tier_label(tier: &str, lang: Lang) -> String {
    if lang == Lang::En {
        return tier.to_string();
    }
    match tier {
        "normal" => "thường",
        "priority" => "ưu tiên",
        "emergency" => "khẩn cấp",
        other => other,
    }
    .to_string()
}

fn summary_table(r: &PlayReport, lang: Lang) -> Table {
    let headings = match lang {
        Lang::Vi => vec![
            "Mã bản tin",
            "Tiêu đề",
            "Mã khu vực",
            "Khu vực",
            "Kế hoạch",
            "Đã phát",
            "Bỏ lỡ",
            "Bị ngắt",
            "Đã hủy",
            "Chưa phát",
            "Lý do bỏ lỡ",
        ],
        Lang::En => vec![
            "Bulletin",
            "Title",
            "Area id",
            "Area",
            "Planned",
            "Played",
            "Missed",
            "Preempted",
            "Cancelled",
            "Pending",
            "Missed reasons",
        ],
    };
    let rows = r
        .summary
        .iter()
        .map(|s| {
            let reasons = s.missed_reasons.iter().map(|(why, n)| format!("{why} ({n})")).collect::<Vec<_>>().join("; ");
            vec![
                Cell::Text(s.bulletin_id.clone()),
                Cell::Text(s.title.clone()),
                Cell::Int(s.area_id),
                Cell::Text(s.area_name.clone()),
                Cell::Int(s.planned),
                Cell::Int(s.played),
                Cell::Int(s.missed),
                Cell::Int(s.preempted),
                Cell::Int(s.cancelled),
                Cell::Int(s.pending),
                Cell::Text(reasons),
            ]
        })
        .collect();
    Table { headings, rows }
}

fn plays_table(r: &PlayReport, lang: Lang, tz: Tz) -> Table {
    let headings = match lang {
        Lang::Vi => vec![
            "Giờ dự kiến",
            "Mã bản tin",
            "Tiêu đề",
            "Khu vực",
            "Mã loa",
            "Tên loa",
            "Mức",
            "Trạng thái",
            "Bắt đầu",
            "Kết thúc",
            "Lý do",
            "Mã lượt phát",
        ],
        Lang::En => vec![
            "Planned",
            "Bulletin",
            "Title",
            "Area",
            "Receiver",
            "Receiver name",
            "Tier",
            "Status",
            "Started",
            "Finished",
            "Reason",
            "Play",
        ],
    };
    let rows = r
        .plays
        .iter()
        .map(|p| {
            vec![
                Cell::Time(Some(local(p.planned_at, tz))),
                Cell::Text(p.bulletin_id.clone()),
                Cell::Text(p.title.clone()),
                Cell::Text(p.area_name.clone()),
                Cell::Text(p.receiver_id.clone()),
                Cell::Text(p.receiver_name.clone()),
                Cell::Text(tier_label(&p.tier, lang)),
                Cell::Text(status_label(&p.status, lang)),
                Cell::Time(p.started_at.map(|t| local(t, tz))),
                Cell::Time(p.finished_at.map(|t| local(t, tz))),
                Cell::Text(p.reason.clone().unwrap_or_default()),
                Cell::Text(p.play_id.clone()),
            ]
        })
        .collect();
    Table { headings, rows }
}

/// One CSV field (RFC 4180): quoted when it holds a comma, a quote or a line break, quotes doubled. Text that a
/// spreadsheet would run as a formula (`=`, `+`, `-`, `@` first) gets a leading apostrophe.
pub fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{s}") } else { s.to_string() };
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// The table as CSV: UTF-8 with a byte-order mark, CRLF line ends, a heading row.
pub fn to_csv(t: &Table) -> Vec<u8> {
    let mut out = String::from("\u{feff}");
    let line = |cells: Vec<String>, out: &mut String| {
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    };
    line(t.headings.iter().map(|h| csv_field(h)).collect(), &mut out);
    for row in &t.rows {
        let cells = row
            .iter()
            .map(|c| match c {
                Cell::Text(s) => csv_field(s),
                Cell::Int(n) => n.to_string(),
                Cell::Time(t) => t.clone().unwrap_or_default(),
            })
            .collect();
        line(cells, &mut out);
    }
    out.into_bytes()
}

/// The tables as an XLSX workbook, one sheet each (bold frozen headings, a filter, dates as Excel dates).
pub fn to_xlsx(sheets: &[(&str, Table)]) -> Result<Vec<u8>, rust_xlsxwriter::XlsxError> {
    use rust_xlsxwriter::{ExcelDateTime, Format as XFormat, Workbook};
    let mut book = Workbook::new();
    let bold = XFormat::new().set_bold();
    let date = XFormat::new().set_num_format("yyyy-mm-dd hh:mm");
    for (name, table) in sheets {
        let sheet = book.add_worksheet();
        sheet.set_name(*name)?;
        for (col, h) in table.headings.iter().enumerate() {
            let col = col as u16;
            sheet.write_string_with_format(0, col, *h, &bold)?;
            sheet.set_column_width(col, (h.chars().count() as f64 + 2.0).max(12.0))?;
        }
        for (i, row) in table.rows.iter().enumerate() {
            let r = u32::try_from(i + 1).unwrap_or(u32::MAX);
            for (col, cell) in row.iter().enumerate() {
                let col = col as u16;
                match cell {
                    Cell::Text(s) => {
                        sheet.write_string(r, col, s)?;
                    }
                    Cell::Int(n) => {
                        sheet.write_number(r, col, *n as f64)?;
                    }
                    Cell::Time(Some(t)) => match ExcelDateTime::parse_from_str(t) {
                        Ok(dt) => {
                            sheet.write_datetime_with_format(r, col, &dt, &date)?;
                        }
                        Err(_) => {
                            sheet.write_string(r, col, t)?;
                        }
                    },
                    Cell::Time(None) => {}
                }
            }
        }
        sheet.set_freeze_panes(1, 0)?;
        let last_col = table.headings.len().saturating_sub(1) as u16;
        sheet.autofilter(0, 0, u32::try_from(table.rows.len()).unwrap_or(u32::MAX), last_col)?;
    }
    book.save_to_buffer()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_escapes_commas_quotes_line_breaks_and_formulas() {
        assert_eq!(csv_field("Giá lúa"), "Giá lúa");
        assert_eq!(csv_field("Giá lúa, ngô"), "\"Giá lúa, ngô\"");
        assert_eq!(csv_field("Họp \"khẩn\""), "\"Họp \"\"khẩn\"\"\"");
        assert_eq!(csv_field("dòng 1\ndòng 2"), "\"dòng 1\ndòng 2\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        let t = Table {
            headings: vec!["Tiêu đề", "Số"],
            rows: vec![vec![Cell::Text("a,b".into()), Cell::Int(3)], vec![Cell::Time(None), Cell::Int(0)]],
        };
        let csv = to_csv(&t);
        assert!(csv.starts_with(&[0xEF, 0xBB, 0xBF]));
        assert_eq!(String::from_utf8(csv).unwrap(), "\u{feff}Tiêu đề,Số\r\n\"a,b\",3\r\n,0\r\n");
    }

    #[test]
    fn dates_are_checked() {
        assert_eq!(parse_date("from", "2026-11-23").unwrap(), NaiveDate::from_ymd_opt(2026, 11, 23).unwrap());
        for bad in ["2026-13-01", "23/11/2026", "2026-11-31", "2026-1-05", ""] {
            let e = parse_date("from", bad).unwrap_err();
            assert!(e.message.contains("YYYY-MM-DD"), "{bad}: {}", e.message);
        }
        // Local midnight in Hanoi is 17:00 UTC the day before.
        let d = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        assert_eq!(rfc3339(day_start(d, crate::schedule::DEFAULT_TZ)), "2026-11-22T17:00:00Z");
    }
}
