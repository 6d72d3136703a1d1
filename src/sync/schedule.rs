//! When a connector runs: its interval, the peak-season windows that shorten it, and the
//! backoff after failures. Pure functions of the time they are given, so tests need no clock.

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::{DateTime, Time};
use jiff::tz::TimeZone;
use serde::Deserialize;

/// A day of the year, written `MM-DD` (`11-25`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct MonthDay {
    month: i8,
    day: i8,
}

impl TryFrom<String> for MonthDay {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let wrong =
            || format!("`{text}` is not a day of the year; write it as MM-DD, like \"11-25\"");
        let (month, day) = text.trim().split_once('-').ok_or_else(wrong)?;
        let month: i8 = month.parse().map_err(|_| wrong())?;
        let day: i8 = day.parse().map_err(|_| wrong())?;
        // A leap year, so 02-29 is a day of the year.
        jiff::civil::Date::new(2024, month, day).map_err(|_| wrong())?;
        Ok(Self { month, day })
    }
}

impl fmt::Display for MonthDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}-{:02}", self.month, self.day)
    }
}

/// Hours of the day, written `HH:MM-HH:MM`: from the start, up to (not including) the end; an
/// end before the start runs past midnight (`20:00-02:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Hours {
    start: Time,
    end: Time,
}

impl TryFrom<String> for Hours {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let wrong = || {
            format!(
                "`{text}` is not a range of hours; write it as HH:MM-HH:MM, like \"08:00-22:00\""
            )
        };
        let (start, end) = text.trim().split_once('-').ok_or_else(wrong)?;
        let time = |part: &str| {
            let (hour, minute) = part.trim().split_once(':').ok_or_else(wrong)?;
            let hour: i8 = hour.parse().map_err(|_| wrong())?;
            let minute: i8 = minute.parse().map_err(|_| wrong())?;
            Time::new(hour, minute, 0, 0).map_err(|_| wrong())
        };
        let hours = Self {
            start: time(start)?,
            end: time(end)?,
        };
        if hours.start == hours.end {
            return Err(format!(
                "`{text}` is an empty range of hours; leave `hours` out for the whole day"
            ));
        }
        Ok(hours)
    }
}

impl Hours {
    fn contains(self, time: Time) -> bool {
        if self.start < self.end {
            self.start <= time && time < self.end
        } else {
            time >= self.start || time < self.end
        }
    }
}

impl fmt::Display for Hours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start.hour(),
            self.start.minute(),
            self.end.hour(),
            self.end.minute()
        )
    }
}

/// A peak season with its own interval, such as every 5 s from late November to the end of
/// December, perhaps only during opening hours.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeakWindow {
    /// First day, `MM-DD`.
    pub from: MonthDay,
    /// Last day (included), `MM-DD`; before `from` when the season runs past new year.
    pub to: MonthDay,
    /// Hours of those days; the whole day when left out.
    #[serde(default)]
    pub hours: Option<Hours>,
    /// The interval inside the window.
    #[serde(deserialize_with = "crate::config::duration")]
    pub interval: Duration,
}

impl PeakWindow {
    /// Whether a local date and time falls in the window.
    #[must_use]
    pub fn contains(&self, local: DateTime) -> bool {
        let today = MonthDay {
            month: local.month(),
            day: local.day(),
        };
        let in_days = if self.from <= self.to {
            self.from <= today && today <= self.to
        } else {
            today >= self.from || today <= self.to
        };
        in_days && self.hours.is_none_or(|hours| hours.contains(local.time()))
    }
}

impl fmt::Display for PeakWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} to {}", self.from, self.to)?;
        if let Some(hours) = self.hours {
            write!(f, ", {hours}")?;
        }
        write!(f, ": every {}", humantime::format_duration(self.interval))
    }
}

/// The interval in force at `now`: the shortest of the peak windows that contain it, else
/// `base`.
#[must_use]
pub fn interval_at(
    base: Duration,
    peaks: &[PeakWindow],
    zone: &TimeZone,
    now: Timestamp,
) -> Duration {
    let local = zone.to_datetime(now);
    peaks
        .iter()
        .filter(|peak| peak.contains(local))
        .map(|peak| peak.interval)
        .min()
        .unwrap_or(base)
}

/// The wait before retry number `failures` (1 for the first retry): `initial` doubled for each
/// earlier failure, capped at `max`, then "equal jitter": half of it fixed and the other half
/// scaled by `jitter` (a random number in `[0, 1)`), so connectors that failed together do not
/// retry together.
#[must_use]
pub fn backoff(failures: u32, initial: Duration, max: Duration, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(30);
    let full = initial.saturating_mul(1 << doublings).min(max);
    let half = full / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peak(from: &str, to: &str, hours: Option<&str>, secs: u64) -> PeakWindow {
        PeakWindow {
            from: MonthDay::try_from(from.to_owned()).unwrap(),
            to: MonthDay::try_from(to.to_owned()).unwrap(),
            hours: hours.map(|h| Hours::try_from(h.to_owned()).unwrap()),
            interval: Duration::from_secs(secs),
        }
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn days_and_hours_are_read_and_refused_with_the_form_to_use() {
        assert_eq!(
            MonthDay::try_from("02-29".to_owned()).unwrap().to_string(),
            "02-29"
        );
        for bad in ["13-01", "11-31", "1125", "xx-01", ""] {
            let err = MonthDay::try_from(bad.to_owned()).unwrap_err();
            assert!(err.contains("MM-DD"), "{bad}: {err}");
        }
        assert_eq!(
            Hours::try_from("8:00-22:30".to_owned())
                .unwrap()
                .to_string(),
            "08:00-22:30"
        );
        for bad in ["25:00-26:00", "08:00", "08-22", "09:00-09:00"] {
            assert!(Hours::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_peak_interval_applies_inside_its_days_and_hours_only() {
        let base = Duration::from_secs(60);
        let utc = TimeZone::UTC;
        let season = [peak("11-25", "12-31", Some("08:00-22:00"), 5)];
        let inside = at("2026-12-03T10:00:00Z");
        assert_eq!(
            interval_at(base, &season, &utc, inside),
            Duration::from_secs(5)
        );
        // Same day, after closing.
        assert_eq!(
            interval_at(base, &season, &utc, at("2026-12-03T22:00:00Z")),
            base
        );
        // Outside the season.
        assert_eq!(
            interval_at(base, &season, &utc, at("2026-11-24T10:00:00Z")),
            base
        );
        // The last day is included.
        assert_eq!(
            interval_at(base, &season, &utc, at("2026-12-31T21:59:00Z")),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn windows_wrap_past_new_year_and_midnight_and_the_shortest_wins() {
        let base = Duration::from_secs(60);
        let utc = TimeZone::UTC;
        let windows = [
            peak("12-20", "01-05", None, 10),
            peak("12-24", "12-24", Some("20:00-02:00"), 2),
        ];
        assert_eq!(
            interval_at(base, &windows, &utc, at("2027-01-03T12:00:00Z")),
            Duration::from_secs(10)
        );
        assert_eq!(
            interval_at(base, &windows, &utc, at("2026-12-24T23:30:00Z")),
            Duration::from_secs(2)
        );
        assert_eq!(
            interval_at(base, &windows, &utc, at("2027-01-06T00:00:00Z")),
            base
        );
    }

    #[test]
    fn hours_are_read_in_the_connectors_time_zone() {
        let base = Duration::from_secs(60);
        let paris = TimeZone::get("Europe/Paris").unwrap();
        let season = [peak("12-01", "12-31", Some("09:00-10:00"), 5)];
        // 08:30 UTC is 09:30 in Paris in winter.
        assert_eq!(
            interval_at(base, &season, &paris, at("2026-12-03T08:30:00Z")),
            Duration::from_secs(5)
        );
        assert_eq!(
            interval_at(base, &season, &TimeZone::UTC, at("2026-12-03T08:30:00Z")),
            base
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_half_of_it_jittered() {
        let initial = Duration::from_secs(2);
        let max = Duration::from_secs(60);
        assert_eq!(backoff(1, initial, max, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(1, initial, max, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(3, initial, max, 0.0), Duration::from_secs(4));
        assert_eq!(backoff(3, initial, max, 0.5), Duration::from_secs(6));
        assert_eq!(backoff(10, initial, max, 0.0), Duration::from_secs(30));
        assert_eq!(backoff(u32::MAX, initial, max, 1.0), max);
    }
}
