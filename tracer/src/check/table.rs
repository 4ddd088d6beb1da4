//! The report for people: one aligned line per check, what stands in for a
//! missing piece on the line below it.

use super::{Row, Status};

/// Longest detail shown; verifier logs run to pages (`--json` has them whole).
const DETAIL_MAX: usize = 200;

fn label(status: Status) -> &'static str {
    match status {
        Status::Ok => "ok",
        Status::Warn => "WARN",
        Status::Fail => "FAIL",
    }
}

/// The first line of `text`, cut to `max` characters.
pub fn shorten(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() > max || text.lines().nth(1).is_some() {
        format!("{}…", line.chars().take(max).collect::<String>())
    } else {
        line.to_string()
    }
}

pub fn render(rows: &[Row]) -> String {
    let width = rows.iter().map(|r| r.name.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for r in rows {
        out.push_str(&format!(
            "{:<4}  {:<width$}  {}\n",
            label(r.status),
            r.name,
            shorten(&r.detail, DETAIL_MAX)
        ));
        if let Some(f) = &r.fallback {
            out.push_str(&format!("{:<4}  {:<width$}  instead: {}\n", "", "", shorten(f, DETAIL_MAX)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_table_aligns_columns_and_shows_fallbacks() {
        let rows = vec![
            Row::new("kernel", Status::Ok, "6.18.44"),
            Row::new("scheduler hook", Status::Warn, "sched_switch_btf failed").instead("sched_switch"),
            Row::new("rules", Status::Fail, "rules x.toml: indicator bad needs a positive weight"),
        ];
        assert_eq!(
            render(&rows),
            "ok    kernel          6.18.44\n\
             WARN  scheduler hook  sched_switch_btf failed\n\
             \x20                     instead: sched_switch\n\
             FAIL  rules           rules x.toml: indicator bad needs a positive weight\n"
        );
    }

    #[test]
    fn check_table_cuts_long_details_to_one_line() {
        let rows =
            vec![Row::new("program x", Status::Fail, format!("load: {}\nverifier log", "v".repeat(300)))];
        let text = render(&rows);
        assert_eq!(text.lines().count(), 1);
        assert!(text.trim_end().ends_with('…'), "{text}");
        assert!(text.chars().count() < DETAIL_MAX + 30, "{text}");
    }
}
