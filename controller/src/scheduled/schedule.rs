//! Schedule expressions as EventBridge Scheduler writes them, read into
//! the times they name: `rate(N unit)`, counted from an anchor (the
//! ScheduledTask's creation), and `cron(minutes hours day-of-month month
//! day-of-week year)` in an IANA time zone, evaluated by the `croner`
//! crate (Quartz weekdays, 1 = Sunday, as EventBridge's).

use std::{str::FromStr, time::Duration};

use chrono::{DateTime, TimeZone, Utc};
use croner::{
    Cron,
    parser::{CronParser, Seconds, Year},
};
use k8s_openapi::jiff::Timestamp;

/// A parsed schedule.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// Every `every`, from an anchor.
    Rate { every: Duration },
    Cron {
        cron: Box<Cron>,
        zone: chrono_tz::Tz,
    },
}

impl Schedule {
    /// Read `expression` in `zone` (default UTC).
    ///
    /// # Errors
    /// What is wrong with it, in words.
    pub fn parse(expression: &str, zone: Option<&str>) -> Result<Self, String> {
        if let Some(rate) = expression
            .strip_prefix("rate(")
            .and_then(|r| r.strip_suffix(')'))
        {
            let (value, unit) = rate
                .split_once(' ')
                .ok_or_else(|| format!("{expression}: rate(VALUE UNIT)"))?;
            let value: u64 = value
                .parse()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| format!("{expression}: the value is a whole number above 0"))?;
            let unit = match unit {
                "minute" | "minutes" => 60,
                "hour" | "hours" => 60 * 60,
                "day" | "days" => 24 * 60 * 60,
                other => return Err(format!("{expression}: unknown unit {other}")),
            };
            if (value == 1) != unit_is_singular(rate) {
                return Err(format!(
                    "{expression}: EventBridge writes `1 minute` and `N minutes`"
                ));
            }
            return Ok(Self::Rate {
                every: Duration::from_secs(value * unit),
            });
        }
        let Some(fields) = expression
            .strip_prefix("cron(")
            .and_then(|c| c.strip_suffix(')'))
        else {
            return Err(format!("{expression}: rate(…) or cron(…)"));
        };
        let parts: Vec<&str> = fields.split_whitespace().collect();
        let [_, _, day_of_month, _, day_of_week, _] = parts[..] else {
            return Err(format!(
                "{expression}: cron takes six fields (minutes hours day-of-month month day-of-week year)"
            ));
        };
        if (day_of_month == "?") == (day_of_week == "?") {
            return Err(format!(
                "{expression}: one of day-of-month and day-of-week is `?`, and only one"
            ));
        }
        // croner reads seconds first; EventBridge runs at second 0.
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .year(Year::Required)
            .alternative_weekdays(true)
            .build()
            .parse(&format!("0 {fields}"))
            .map_err(|e| format!("{expression}: {e}"))?;
        let zone = match zone {
            None => chrono_tz::UTC,
            Some(name) => {
                chrono_tz::Tz::from_str(name).map_err(|_| format!("unknown time zone {name}"))?
            }
        };
        Ok(Self::Cron {
            cron: Box::new(cron),
            zone,
        })
    }

    /// The first time it names after `after` (rates count from `anchor`);
    /// `None` when there is none (a cron whose years are over).
    #[must_use]
    pub fn next_after(&self, after: Timestamp, anchor: Timestamp) -> Option<Timestamp> {
        match self {
            Self::Rate { every } => {
                let every = i64::try_from(every.as_secs()).ok()?.max(1);
                let since = after.as_second() - anchor.as_second();
                let periods = if since < 0 { 1 } else { since / every + 1 };
                Timestamp::from_second(anchor.as_second() + periods * every).ok()
            }
            Self::Cron { cron, zone } => {
                let local = chrono_of(after)?.with_timezone(zone);
                let next = cron.find_next_occurrence(&local, false).ok()?;
                Timestamp::from_second(next.timestamp()).ok()
            }
        }
    }

    /// The last time it names in `(after, now]`, and how many it names
    /// there; `None` when it names none.
    #[must_use]
    pub fn latest_due(
        &self,
        after: Timestamp,
        now: Timestamp,
        anchor: Timestamp,
    ) -> Option<(Timestamp, u64)> {
        if let Self::Rate { every } = self {
            // Counted, not walked: a rate of a minute missed for a year is
            // half a million times.
            let first = self.next_after(after, anchor)?;
            if first > now {
                return None;
            }
            let every = i64::try_from(every.as_secs()).ok()?.max(1);
            let more = (now.as_second() - first.as_second()) / every;
            let latest = Timestamp::from_second(first.as_second() + more * every).ok()?;
            return Some((latest, u64::try_from(more).ok()? + 1));
        }
        let mut latest = None;
        let mut count = 0_u64;
        let mut at = after;
        // Walked, but bounded: past this many, the count is a floor.
        while count < 100_000 {
            match self.next_after(at, anchor) {
                Some(next) if next <= now => {
                    latest = Some(next);
                    count += 1;
                    at = next;
                }
                _ => break,
            }
        }
        latest.map(|l| (l, count))
    }
}

fn unit_is_singular(rate: &str) -> bool {
    !rate.ends_with('s')
}

fn chrono_of(t: Timestamp) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(t.as_second(), 0).single()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("a timestamp")
    }

    #[test]
    fn rates_count_from_their_anchor() {
        let hourly = Schedule::parse("rate(1 hour)", None).expect("valid");
        let anchor = at("2026-01-01T10:15:00Z");
        assert_eq!(
            hourly.next_after(anchor, anchor),
            Some(at("2026-01-01T11:15:00Z"))
        );
        assert_eq!(
            hourly.next_after(at("2026-01-01T12:20:00Z"), anchor),
            Some(at("2026-01-01T13:15:00Z"))
        );
        // Three missed; the latest is the one to run.
        assert_eq!(
            hourly.latest_due(anchor, at("2026-01-01T13:30:00Z"), anchor),
            Some((at("2026-01-01T13:15:00Z"), 3))
        );
        assert_eq!(
            hourly.latest_due(anchor, at("2026-01-01T11:00:00Z"), anchor),
            None
        );
        let minutes = Schedule::parse("rate(5 minutes)", None).expect("valid");
        assert_eq!(
            minutes.latest_due(anchor, at("2027-01-01T10:15:00Z"), anchor),
            Some((at("2027-01-01T10:15:00Z"), 365 * 24 * 12))
        );
    }

    #[test]
    fn crons_are_eventbridge_s_six_fields_in_their_time_zone() {
        // 09:00 on weekdays (2-6 is MON-FRI, as EventBridge counts).
        let weekdays = Schedule::parse("cron(0 9 ? * 2-6 *)", Some("Europe/Paris")).expect("valid");
        // Friday 2026-01-02 10:00 in Paris is 09:00 UTC: next is Monday.
        assert_eq!(
            weekdays.next_after(at("2026-01-02T09:00:00Z"), at("2026-01-01T00:00:00Z")),
            Some(at("2026-01-05T08:00:00Z"))
        );
        // Summer time: 09:00 in Paris is 07:00 UTC.
        assert_eq!(
            weekdays.next_after(at("2026-07-06T06:00:00Z"), at("2026-01-01T00:00:00Z")),
            Some(at("2026-07-06T07:00:00Z"))
        );
        let every_minute = Schedule::parse("cron(* * * * ? *)", None).expect("valid");
        let after = at("2026-01-01T00:00:30Z");
        assert_eq!(
            every_minute.latest_due(after, at("2026-01-01T00:10:05Z"), after),
            Some((at("2026-01-01T00:10:00Z"), 10))
        );
        let once = Schedule::parse("cron(30 12 1 1 ? 2026)", None).expect("valid");
        assert_eq!(
            once.next_after(at("2026-06-01T00:00:00Z"), at("2026-01-01T00:00:00Z")),
            None,
            "its only year is over"
        );
    }

    #[test]
    fn what_eventbridge_refuses_is_refused_saying_why() {
        for (expression, zone, says) in [
            ("rate(0 minutes)", None, "above 0"),
            ("rate(2 minute)", None, "`N minutes`"),
            ("rate(1 week)", None, "unknown unit"),
            ("cron(0 9 * * *)", None, "six fields"),
            ("cron(0 9 * * 2 *)", None, "only one"),
            (
                "cron(0 9 ? * 2 *)",
                Some("Mars/Olympus"),
                "unknown time zone",
            ),
            ("cron(61 9 ? * 2 *)", None, "cron(61"),
            ("every day", None, "rate(…) or cron(…)"),
        ] {
            let e = Schedule::parse(expression, zone).expect_err(expression);
            assert!(e.contains(says), "{expression}: {e}");
        }
    }
}
