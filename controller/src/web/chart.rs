//! A receiver's health history as a small inline SVG chart (no script, no image files): CPU temperature and free
//! disk over the last days, each line scaled to its own range, with its minimum and maximum written beside it.

use std::fmt::Write;

use serde_json::Value;

const W: f64 = 600.0;
const H: f64 = 160.0;
const PAD: f64 = 24.0;

/// The chart of `samples` (`[{"at": RFC 3339, "health": {"temp_c": …, "disk_mb": …}}]`), or `None` with fewer
/// than two samples.
pub fn svg(samples: &[Value]) -> Option<String> {
    let points: Vec<(i64, &Value)> = samples
        .iter()
        .filter_map(|s| {
            let at = chrono::DateTime::parse_from_rfc3339(s["at"].as_str()?).ok()?.timestamp_millis();
            Some((at, &s["health"]))
        })
        .collect();
    if points.len() < 2 {
        return None;
    }
    let (t0, t1) = (points.iter().map(|p| p.0).min()?, points.iter().map(|p| p.0).max()?);
    let span = (t1 - t0).max(1) as f64;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"health history\">"
    );
    for (key, colour, unit, row) in [("temp_c", "#b3261e", "°C", 0.0), ("disk_mb", "#0b5cad", "MB", 1.0)] {
        let values: Vec<(f64, f64)> =
            points.iter().filter_map(|(at, h)| Some(((*at - t0) as f64 / span, h[key].as_f64()?))).collect();
        let (Some(lo), Some(hi)) = (
            values.iter().map(|v| v.1).min_by(|a, b| a.total_cmp(b)),
            values.iter().map(|v| v.1).max_by(|a, b| a.total_cmp(b)),
        ) else {
            continue;
        };
        let range = (hi - lo).max(1.0);
        let line: Vec<String> = values
            .iter()
            .map(|(x, v)| {
                format!("{:.1},{:.1}", PAD + x * (W - 2.0 * PAD), H - PAD - (v - lo) / range * (H - 2.0 * PAD))
            })
            .collect();
        let _ = write!(
            out,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\
             <text x=\"{PAD}\" y=\"{:.0}\" font-size=\"12\" fill=\"{colour}\">{lo:.0}–{hi:.0} {unit}</text>",
            line.join(" "),
            14.0 + row * 14.0
        );
    }
    out.push_str("</svg>");
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn two_samples_make_two_lines_and_fewer_make_none() {
        let s = [
            json!({"at": "2026-11-23T00:00:00Z", "health": {"temp_c": 40, "disk_mb": 900}}),
            json!({"at": "2026-11-23T01:00:00Z", "health": {"temp_c": 55, "disk_mb": 880}}),
        ];
        let svg = svg(&s).unwrap();
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("40–55 °C"), "{svg}");
        assert!(super::svg(&s[..1]).is_none());
        assert!(super::svg(&[json!({"at": "garbage"}), json!({})]).is_none());
    }
}
