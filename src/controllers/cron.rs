//! The standard 5-field cron schedule (minute hour day-of-month month
//! day-of-week, with lists, ranges, steps, names and the `@hourly`-style
//! macros) and the next time it fires, as upstream's robfig/cron parser.

use jiff::civil::{DateTime, date};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CronError {
    #[error("expected exactly 5 fields, found {0}: {1:?}")]
    FieldCount(usize, String),
    #[error("failed to parse {field} field {text:?}: {reason}")]
    Field { field: &'static str, text: String, reason: String },
}

/// A parsed schedule: one bit per allowed value of each field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Whether day-of-month / day-of-week were `*` (then the other alone decides).
    days_any: bool,
    weekdays_any: bool,
}

const MONTHS: &[&str] = &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const WEEKDAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn value(field: &'static str, text: &str, names: &[&str], offset: u32) -> Result<u32, CronError> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        return Ok(i as u32 + offset);
    }
    text.parse().map_err(|_| CronError::Field { field, text: text.into(), reason: "not a number".into() })
}

/// One field: `*`, `?`, `5`, `1-5`, `*/15`, `1-30/2`, `mon,wed` …
fn field(field: &'static str, text: &str, min: u32, max: u32, names: &[&str], offset: u32) -> Result<u64, CronError> {
    let err = |reason: String| CronError::Field { field, text: text.into(), reason };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => (range, step.parse::<u32>().map_err(|_| err(format!("bad step {step:?}")))?),
            None => (part, 1),
        };
        if step == 0 {
            return Err(err("step of zero".into()));
        }
        let (low, high) = match range {
            "*" | "?" => (min, max),
            _ => match range.split_once('-') {
                Some((a, b)) => (value(field, a, names, offset)?, value(field, b, names, offset)?),
                None => {
                    let v = value(field, range, names, offset)?;
                    (v, if part.contains('/') { max } else { v })
                }
            },
        };
        if low < min || high > max || low > high {
            return Err(err(format!("{range:?} is outside {min}-{max}")));
        }
        let mut v = low;
        while v <= high {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule, CronError> {
        let text = text.trim();
        let expanded = match text {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(CronError::FieldCount(fields.len(), text.into()));
        }
        Ok(Schedule {
            minutes: field("minute", fields[0], 0, 59, &[], 0)?,
            hours: field("hour", fields[1], 0, 23, &[], 0)?,
            days: field("day-of-month", fields[2], 1, 31, &[], 0)?,
            months: field("month", fields[3], 1, 12, MONTHS, 1)?,
            // Sunday may be written 7.
            weekdays: match field("day-of-week", fields[4], 0, 7, WEEKDAYS, 0)? {
                bits if bits & (1 << 7) != 0 => (bits & !(1 << 7)) | 1,
                bits => bits,
            },
            days_any: fields[2].starts_with('*') || fields[2] == "?",
            weekdays_any: fields[4].starts_with('*') || fields[4] == "?",
        })
    }

    fn day_matches(&self, dt: DateTime) -> bool {
        let day = self.days & (1 << dt.day()) != 0;
        let weekday = self.weekdays & (1 << dt.weekday().to_sunday_zero_offset()) != 0;
        // robfig/cron: if either field is `*`, both must match; otherwise either may.
        if self.days_any || self.weekdays_any { day && weekday } else { day || weekday }
    }

    /// The first civil minute strictly after `after` that the schedule allows.
    pub fn next_civil(&self, after: DateTime) -> Option<DateTime> {
        let mut t = date(after.year(), after.month(), after.day()).at(after.hour(), after.minute(), 0, 0);
        t = t.checked_add(1.minute()).ok()?;
        // Like robfig/cron, give up after five years.
        while t.year() <= after.year() + 5 {
            if self.months & (1 << t.month()) == 0 {
                t = t.first_of_month().checked_add(1.month()).ok()?.date().at(0, 0, 0, 0);
                continue;
            }
            if !self.day_matches(t) {
                t = t.date().checked_add(1.day()).ok()?.at(0, 0, 0, 0);
                continue;
            }
            if self.hours & (1 << t.hour()) == 0 {
                t = t.date().at(t.hour(), 0, 0, 0).checked_add(1.hour()).ok()?;
                continue;
            }
            if self.minutes & (1 << t.minute()) == 0 {
                t = t.checked_add(1.minute()).ok()?;
                continue;
            }
            return Some(t);
        }
        None
    }

    /// The first firing strictly after `after`, in time zone `tz`.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let civil = tz.to_datetime(after);
        let next = self.next_civil(civil)?;
        tz.to_ambiguous_timestamp(next).compatible().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime {
        text.parse().unwrap_or_default()
    }

    #[test]
    fn parses_fields_and_macros() {
        assert!(Schedule::parse("*/5 * * * *").is_ok());
        assert!(Schedule::parse("0 9-17/2 * jan-jun mon-fri").is_ok());
        assert_eq!(Schedule::parse("@daily"), Schedule::parse("0 0 * * *"));
        assert!(matches!(Schedule::parse("* * * *"), Err(CronError::FieldCount(4, _))));
        assert!(Schedule::parse("60 * * * *").is_err());
        assert!(Schedule::parse("* * 0 * *").is_err());
        assert!(Schedule::parse("*/0 * * * *").is_err());
        assert!(Schedule::parse("a * * * *").is_err());
    }

    #[test]
    fn next_firings() {
        let every5 = Schedule::parse("*/5 * * * *").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(every5.next_civil(at("2024-03-01T10:02:30")), Some(at("2024-03-01T10:05:00")));
        assert_eq!(every5.next_civil(at("2024-03-01T10:05:00")), Some(at("2024-03-01T10:10:00")));
        let nightly = Schedule::parse("30 2 * * *").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(nightly.next_civil(at("2024-12-31T03:00:00")), Some(at("2025-01-01T02:30:00")));
        let leap = Schedule::parse("0 0 29 2 *").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(leap.next_civil(at("2024-03-01T00:00:00")), Some(at("2028-02-29T00:00:00")));
        // 2024-03-01 is a Friday: next Monday is the 4th.
        let mondays = Schedule::parse("0 8 * * mon").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mondays.next_civil(at("2024-03-01T09:00:00")), Some(at("2024-03-04T08:00:00")));
        let sunday7 = Schedule::parse("0 0 * * 7").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sunday7.next_civil(at("2024-03-01T09:00:00")), Some(at("2024-03-03T00:00:00")));
        // Day-of-month and day-of-week both restricted: either matches.
        let either = Schedule::parse("0 0 15 * fri").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(either.next_civil(at("2024-03-01T09:00:00")), Some(at("2024-03-08T00:00:00")));
        let never = Schedule::parse("0 0 31 2 *").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(never.next_civil(at("2024-03-01T09:00:00")), None);
    }
}
